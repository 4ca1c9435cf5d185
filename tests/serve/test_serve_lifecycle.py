"""Serving a run folder, adapters coming and going, graceful shutdown, and `ayar serve`'s option errors."""

from __future__ import annotations

import shutil
import socket
import threading

import httpx
import openai
import pytest
import yaml
from serve_helpers import chat_ids, reference, running_server, wait_until
from typer.testing import CliRunner

from ayar.cli import app
from ayar.errors import AyarError
from ayar.serve.launch import ServeOptions, build
from ayar.serve.protocol import OpenAIError

PROMPT = [{"role": "user", "content": "Ürün: mavi renkli güzel bir masa"}]


def make_run_folder(tmp_path, base, adapter) -> str:
    """What `ayar train` leaves behind, as far as serving reads it: recipe.yaml and adapter/."""
    run = tmp_path / "support-run"
    shutil.copytree(adapter, run / "adapter")
    (run / "recipe.yaml").write_text(yaml.safe_dump({"model": {"path": str(base)}, "data": {"train": "t.jsonl"}}))
    return str(run)


def test_run_folder_serves_its_adapter_and_its_base(tmp_path, tiny_llama, lora_pair, offline):
    options = ServeOptions(target=make_run_folder(tmp_path, tiny_llama, lora_pair["a"]), dtype="fp32", max_queue=2,
                           adapter_roots=[str(lora_pair["a"].parent)])
    with running_server(options) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)
        assert [m.id for m in client.models.list()] == ["llama", "support-run"]

        def answer(name):
            return client.chat.completions.create(model=name, messages=PROMPT, temperature=0,
                                                  max_tokens=6).choices[0].message.content

        expected = {name: reference(*offline[key], chat_ids(offline[key][1], PROMPT), 6)[0]
                    for name, key in (("support-run", "a"), ("llama", "base"))}
        assert {name: answer(name) for name in expected} == expected

        # Unloading the last adapter leaves the plain base model; loading it back restores the answers.
        assert httpx.delete(f"{server.url}/admin/adapters/support-run").status_code == 200
        assert [m.id for m in client.models.list()] == ["llama"]
        assert answer("llama") == expected["llama"]
        assert httpx.post(f"{server.url}/admin/adapters",
                          json={"name": "again", "path": str(lora_pair["a"])}).status_code == 201
        assert answer("again") == expected["support-run"] and answer("llama") == expected["llama"]


def test_shutdown_finishes_accepted_requests_and_refuses_new_ones(tiny_llama, lora_pair, offline):
    options = ServeOptions(target=str(tiny_llama), adapters=[f"a={lora_pair['a']}"], dtype="fp32", max_queue=2)
    with running_server(options) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)
        port = int(server.url.rsplit(":", 1)[1])
        entered, release = threading.Event(), threading.Event()
        server.engine.before_job = lambda job: (entered.set(), release.wait(timeout=30))
        texts = {}

        def ask(name, stream):
            reply = client.chat.completions.create(model=name, messages=PROMPT, temperature=0, max_tokens=6,
                                                   stream=stream)
            texts[name] = "".join(c.choices[0].delta.content or "" for c in reply) if stream \
                else reply.choices[0].message.content

        streaming = threading.Thread(target=ask, args=("a", True))
        queued = threading.Thread(target=ask, args=("llama", False))
        streaming.start()
        assert entered.wait(timeout=20)  # generating (held by the hook)
        queued.start()
        wait_until(lambda: server.engine.pending() == 1)  # accepted, waiting

        server.server.should_exit = True

        def refused() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return False
            except OSError:
                return True

        wait_until(refused)  # no new connections once shutdown has begun
        with pytest.raises(openai.APIConnectionError):
            client.chat.completions.create(model="a", messages=PROMPT, max_tokens=1)
        release.set()
        streaming.join(timeout=30)
        queued.join(timeout=30)
        server.thread.join(timeout=30)
        assert not server.thread.is_alive()

    # Both accepted requests were answered in full, each by its own model.
    expected = {name: reference(*offline[key], chat_ids(offline[key][1], PROMPT), 6)[0]
                for name, key in (("a", "a"), ("llama", "base"))}
    assert texts == expected
    with pytest.raises(OpenAIError) as err:  # the drained engine takes nothing more
        server.engine.submit(object())
    assert err.value.status == 503 and err.value.code == "shutting_down"


def test_bad_options_fail_before_serving(tmp_path, tiny_llama, lora_pair, monkeypatch):
    runner = CliRunner()
    monkeypatch.delenv("AYAR_UNSET_KEY", raising=False)
    for args, message in ((["--ab", "exp=a"], "--ab 'exp=a'"), (["--adapter", "a"], "--adapter 'a'"),
                          (["--api-key-env", "AYAR_UNSET_KEY"], "AYAR_UNSET_KEY is unset")):
        result = runner.invoke(app, ["serve", str(tiny_llama), *args])
        assert isinstance(result.exception, AyarError) and message in str(result.exception), result.output
    for options, message in (
        (ServeOptions(str(tiny_llama), ab=["exp=llama:1,nope:1"]), "'nope' is neither the base model"),
        (ServeOptions(str(tiny_llama), adapters=[f"llama={lora_pair['a']}"]), "'llama' is already served"),
        (ServeOptions(str(tiny_llama), adapters=[f"x={tmp_path}"]), "not a PEFT adapter folder"),
    ):
        with pytest.raises(AyarError, match=message):
            build(options)
