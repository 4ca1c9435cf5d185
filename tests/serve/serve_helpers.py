"""Running a real uvicorn server in a thread of the test process, and waiting for conditions.

The thread keeps the server's engine reachable, so a test can hold the worker still.
"""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class Running:
    url: str
    host: object  # ayar.serve.models.ModelHost
    engine: object  # ayar.serve.engine.Engine
    server: object  # uvicorn.Server
    thread: threading.Thread


@contextmanager
def running_server(options, *, api_key: str | None = None, env=None):
    """Build a server from ``ServeOptions`` and run it with uvicorn on a free port until the block ends."""
    import uvicorn

    from ayar.serve.launch import build

    if api_key is not None:
        env.setenv(options.api_key_env, api_key)
    app, host, engine = build(options)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield Running(f"http://127.0.0.1:{port}", host, engine, server, thread)
    finally:
        engine.before_job = None
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def wait_until(condition, timeout: float = 20.0) -> None:
    """Poll ``condition`` until it holds (fails the test after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


def reference(model, tokenizer, prompt_ids: list[int], max_new_tokens: int) -> tuple[str, list[int]]:
    """Greedy reply and its token ids from ``model.generate`` alone: the reference the server must match."""
    import torch

    from ayar.chat.templates import end_of_turn_ids

    ids = torch.tensor([prompt_ids])
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                         do_sample=False, eos_token_id=end_of_turn_ids(tokenizer),
                         pad_token_id=tokenizer.pad_token_id)
    new = out[0, ids.shape[1]:].tolist()
    return tokenizer.decode(new, skip_special_tokens=True), new


def chat_ids(tokenizer, messages: list[dict]) -> list[int]:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]
