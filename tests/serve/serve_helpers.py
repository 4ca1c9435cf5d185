"""Running a real uvicorn server in a thread of the test process, and waiting for conditions.

The thread keeps the server's engine reachable, so a test can hold the worker still.
"""

from __future__ import annotations

import time
from contextlib import contextmanager


@contextmanager
def running_server(options, *, api_key: str | None = None, env=None):
    """Build a server from ``ServeOptions`` and run it on a free loopback port until the block ends.

    Yields :class:`ayar.serve.launch.Background` (url, host, engine, server, thread).
    """
    from ayar.serve.launch import serve_in_background

    if api_key is not None:
        env.setenv(options.api_key_env, api_key)
    with serve_in_background(options, ready_timeout=30) as server:
        try:
            yield server
        finally:
            server.engine.before_job = None  # a worker held still would never drain


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
