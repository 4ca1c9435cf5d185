"""Fixtures for the distillation tests: a student and a teacher that share one tokenizer."""

from __future__ import annotations

import pytest

from helpers import corpus


@pytest.fixture(scope="session")
def two_tiny(tmp_path_factory):
    """Two tiny models with one tokenizer (same corpus) and different random weights: (student, teacher) folders."""
    from ayar.model.tiny import build_tiny_model

    folder = tmp_path_factory.mktemp("distill")
    kw = {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_layers": 2, "num_heads": 2,
          "num_kv_heads": 1}
    return (build_tiny_model(folder / "student", corpus(), seed=0, **kw),
            build_tiny_model(folder / "teacher", corpus(), seed=1, **kw))

