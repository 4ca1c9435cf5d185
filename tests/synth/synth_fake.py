"""A fake OpenAI-compatible teacher on loopback, for the synth tests (no model, no network)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import yaml

from fake_openai import FakeOpenAI


class FakeTeacher(FakeOpenAI):
    """The fake server with a Turkish teacher's reply unless told otherwise."""

    def __init__(self, reply: Callable[[dict], tuple[int, str]] | None = None):
        super().__init__(reply or (lambda body: (200, "Tamam, siparişiniz yarın kargoya verilecek.")))


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
