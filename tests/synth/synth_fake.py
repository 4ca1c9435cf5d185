"""A fake OpenAI-compatible teacher on loopback, for the synth tests (no model, no network)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml


class FakeTeacher:
    """Answers POST /v1/chat/completions; ``reply(body) -> (status, text)`` decides each answer.

    Usage is reported as prompt characters // 4 and completion characters // 4 (at least 1 each).
    """

    def __init__(self, reply: Callable[[dict], tuple[int, str]] | None = None):
        self.requests: list[dict] = []
        self.reply = reply or (lambda body: (200, "Tamam, siparişiniz yarın kargoya verilecek."))
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.requests.append(body)
                status, text = fake.reply(body)
                if status == 200:
                    prompt = sum(len(m["content"]) for m in body["messages"]) // 4 or 1
                    completion = len(text) // 4 or 1
                    payload = {"id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
                               "choices": [{"index": 0, "finish_reason": "stop",
                                            "message": {"role": "assistant", "content": text}}],
                               "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                         "total_tokens": prompt + completion}}
                else:
                    payload = {"error": {"message": text, "type": "server_error"}}
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def user_text(body: dict) -> str:
    return body["messages"][-1]["content"]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def teacher(fake: FakeTeacher, **kw) -> dict:
    return {"base_url": fake.url, "model": "fake-teacher", "api_key_env": None, "retry_delay": 0.5,
            "concurrency": 1, **kw}


def write_recipe(folder: Path, synth: dict, **top) -> Path:
    recipe = {"model": {"path": "unused-model"}, "data": {"train": "data/prepared/train.jsonl"}, "synth": synth, **top}
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


PROMPTS = [{"messages": [{"role": "user", "content": f"Sipariş {i} nerede?"}]} for i in range(6)]
