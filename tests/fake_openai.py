"""A fake OpenAI-compatible server on loopback (no model, no network), shared by the judge and synth tests."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeOpenAI:
    """Answers POST /v1/chat/completions; ``reply(body) -> (status, text)`` decides each answer.

    Records every request body and its headers (lower-cased names). Usage is reported as prompt
    characters // 4 and completion characters // 4 (at least 1 each).
    """

    def __init__(self, reply: Callable[[dict], tuple[int, str]]):
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.reply = reply
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.requests.append(body)
                    fake.headers.append({k.lower(): v for k, v in self.headers.items()})
                    number = len(fake.requests)
                status, text = fake.reply(body)
                if status == 200:
                    prompt = sum(len(m["content"]) for m in body["messages"]) // 4 or 1
                    completion = len(text) // 4 or 1
                    payload = {"id": f"c{number}", "object": "chat.completion", "created": 0, "model": body["model"],
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
