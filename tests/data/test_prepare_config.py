"""The ``prepare:`` recipe section: documented fields, ranges and combinations checked at load."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from ayar.data.clean import LengthFilter
from ayar.data.formats import Text
from ayar.data.prepare_config import LengthConfig, PrepareSection

MINIMAL = {"sources": [{"path": "data.jsonl"}]}


def _models(model: type[BaseModel], seen: set | None = None):
    seen = seen if seen is not None else set()
    if model in seen:
        return
    seen.add(model)
    yield model
    for field in model.model_fields.values():
        for arg in (field.annotation, *getattr(field.annotation, "__args__", ())):
            for inner in (arg, *getattr(arg, "__args__", ())):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    yield from _models(inner, seen)


def test_every_field_is_documented_and_defaults_are_valid():
    section = PrepareSection.model_validate(MINIMAL)
    assert section.split.train == 0.8 and section.on_error == "fail" and section.pii is not None
    for model in _models(PrepareSection):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"


@pytest.mark.parametrize(("change", "message"), [
    ({"dedup": {"threshold": 1.5}}, "less than or equal to 0.99"),
    ({"dedup": {"treshold": 0.8}}, "Extra inputs are not permitted"),
    ({"split": {"train": 0.8, "val": 0.3, "test": 0.1}}, "must be 1"),
    ({"sources": [{"path": "a.jsonl", "weight": 2, "sample_size": 10}]}, "not both"),
    ({"sources": [{"path": "a.jsonl", "format": "csv"}]}, "Input should be"),
    ({"sources": []}, "at least 1 item"),
    ({"length": {"unit": "tokens"}}, "needs a tokenizer"),
    ({"length": {"min": 10, "max": 5}}, "smaller than min"),
    ({"on_error": "ignore"}, "'fail' or 'skip'"),
    ({"pii": {"operators": {"TCKN": "erase"}}}, "Input should be"),
    ({"workers": -1}, "greater than or equal to 0"),
])
def test_bad_values_are_rejected(change, message):
    with pytest.raises(ValidationError, match=message):
        PrepareSection.model_validate({**MINIMAL, **change})


def test_pii_can_be_turned_off():
    assert PrepareSection.model_validate({**MINIMAL, "pii": None}).pii is None


def test_token_length_filter(tmp_path):
    from ayar.model.tiny import build_tokenizer

    build_tokenizer(["kargo teslimat iade fatura " * 20] * 20, vocab_size=300).save_pretrained(tmp_path / "tok")
    length = LengthFilter(LengthConfig(unit="tokens", min=3, max=12, tokenizer="tok"), base_dir=tmp_path)
    assert length.check(Text("t", 1, "kargo teslimat iade")) is None
    assert length.check(Text("t", 1, "kargo")).code == "too_short"
    assert length.check(Text("t", 1, "kargo teslimat iade fatura " * 5)).code == "too_long"
