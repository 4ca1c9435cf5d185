"""GGUF through llama.cpp's own tools: the pinned converter, K-quants, gguf-lora, converter failures.

The tiny runs here have hidden size 256 so that every matrix row is a whole number of
K-quant super-blocks (256 values): nothing falls back to another type, and file sizes
follow the types' bits per weight. Their BPE tokenizer is unknown to llama.cpp's
converter, so their float source file comes from ayar's fallback writer (recorded in
the manifest); the LoRA GGUF is always llama.cpp's ``convert_lora_to_gguf.py``, and the
real-model tests at the end run ``convert_hf_to_gguf.py`` itself.
"""

from __future__ import annotations

import shutil

import pytest
from llama_cpp import Llama
from transformers import AutoTokenizer

from ayar.errors import AyarError
from ayar.export import converter
from ayar.export.gguf import check_types, metadata, source_type, tensor_types
from ayar.export.run import export_run
from ayar.model.tiny import build_tiny_model
from conftest import train_run
from helpers import corpus


@pytest.fixture(scope="module")
def llama_cpp_converter():
    try:
        return converter.ensure_converter()
    except converter.ConverterError as error:
        pytest.skip(f"llama.cpp's converter is not available here: {error}")


@pytest.fixture(scope="module")
def k_runs(tmp_path_factory, llama_cpp_converter):
    """LoRA runs on tiny Llama and Qwen2 models with 256-wide rows."""
    root = tmp_path_factory.mktemp("k_runs")
    runs = {}
    for arch in ("llama", "qwen2"):
        base = build_tiny_model(root / f"base_{arch}", corpus(), arch=arch, vocab_size=512, hidden_size=256,
                                intermediate_size=512, num_layers=2, num_heads=4, num_kv_heads=2, init_std=0.1)
        runs[arch] = train_run(root / arch, base, adapter={"r": 8, "alpha": 16, "dropout": 0.0}, steps=40)
    return runs


@pytest.fixture(scope="module")
def k_exports(tmp_path_factory, k_runs):
    out = {}
    for arch, run in k_runs.items():
        (result,) = export_run(run, ["gguf"], tmp_path_factory.mktemp(f"k_{arch}"), dtype="fp32",
                               gguf_types=["q4_k_m", "f16", "q8_0"])
        out[arch] = result
    return out


# ----------------------------------------------------------------------------- the converter files


def test_type_choices_and_quantisation_source():
    assert check_types(["q4_k_m", "f16"]) == []
    assert check_types(["q4_k", "f16", "f16"]) == [
        "unknown GGUF type 'q4_k' (choose from f32, f16, bf16, q8_0, q6_k, q5_k_m, q4_k_m)",
        "GGUF types repeated: ['q4_k', 'f16', 'f16']"]
    assert source_type(["q4_k_m"], base_is_bf16=False) == "f16"
    assert source_type(["q4_k_m", "f32"], base_is_bf16=True) == "bf16"
    assert source_type(["f32", "bf16"], base_is_bf16=False) == "f32"


def test_converter_files_are_checked_before_use(llama_cpp_converter, tmp_path, monkeypatch):
    pinned = converter.pins()
    assert pinned["llama_cpp_python"] == "0.3.36" and len(pinned["files"]) > 100
    converter.check_files(llama_cpp_converter.folder)  # the cache as extracted: accepted
    copy = tmp_path / "llama.cpp-convert" / "0.3.36"
    shutil.copytree(llama_cpp_converter.folder, copy)
    monkeypatch.setattr(converter, "converter_dir", lambda: copy)
    assert converter.ensure_converter().folder == copy

    script = copy / "conversion" / "llama.py"
    script.chmod(0o644)
    script.write_text(script.read_text() + "\nimport os  # tampered\n")
    with pytest.raises(converter.ConverterError, match=r"conversion/llama.py differs from the pinned file"):
        converter.ensure_converter()
    shutil.copy2(llama_cpp_converter.folder / "conversion" / "llama.py", script)
    converter.ensure_converter()
    (copy / "conversion" / "extra.py").write_text("print('imported')\n")
    with pytest.raises(converter.ConverterError, match=r"extra.py is not one of its pinned files"):
        converter.ensure_converter()
    (copy / "conversion" / "extra.py").unlink()
    (copy / "gguf-py" / "gguf" / "quants.py").unlink()
    with pytest.raises(converter.ConverterError, match=r"quants.py is missing"):
        converter.ensure_converter()


def test_sdist_with_another_hash_is_refused(tmp_path, monkeypatch):
    fake = tmp_path / "llama_cpp_python-0.3.36.tar.gz"
    fake.write_bytes(b"not the pinned sdist")
    monkeypatch.setenv("AYAR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(converter.SDIST_ENV, str(fake))
    with pytest.raises(converter.ConverterError, match="sha256 differs from the pinned llama-cpp-python 0.3.36"):
        converter.ensure_converter()
    assert not (tmp_path / "home" / "llama.cpp-convert" / "0.3.36").exists()


def test_failure_reasons_are_one_line():
    traceback = "INFO:x\nTraceback (most recent call last):\n  File \"a.py\"\nKeyError: 'hidden_size'\n"
    assert converter.failure_reason(traceback) == "KeyError: 'hidden_size'"
    assert converter.failure_reason("ERROR:hf-to-gguf:Model FooForCausalLM is not supported\n") == \
        "architecture FooForCausalLM is not supported by llama.cpp's converter"
    assert "pre-tokenizer" in converter.failure_reason("NotImplementedError: BPE pre-tokenizer was not recognized")


# ----------------------------------------------------------------------------- tiny models, K-quants


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_f16_and_k_quants_pass_verification(arch, k_exports):
    result = k_exports[arch]
    verification = result.manifest["verification"]
    assert result.manifest["verified"] and verification["tokenizer"]["identical"]
    assert verification["f16"]["continuation_tokens_matched"] == [16, 16, 16]  # greedy parity with HF
    assert verification["q8_0"]["top1_agreement"] >= 0.9 and verification["q4_k_m"]["top1_agreement"] >= 0.7
    details = result.manifest["details"]
    assert details["quantised_from"] == "f16" and details["modelfile_uses"] == "run-q4_k_m.gguf"
    assert set(details["top1_agreement"]) == {"q4_k_m", "f16", "q8_0"}
    assert "pre-tokenizer" in details["notes"][0] and details["written_by"] == "ayar gguf_writer"
    assert "FROM ./run-q4_k_m.gguf\n" in (result.folder / "Modelfile").read_text()
    assert {f"run-{t}.gguf" for t in ("q4_k_m", "f16", "q8_0")} <= set(result.manifest["files"])


@pytest.mark.slow
def test_q4_k_m_is_smaller_than_q8_0_by_its_bits_per_weight(k_exports):
    """Q4_K stores 4.5 bits per weight, Q6_K 6.5625 (q4_k_m keeps some v/down matrices in it), Q8_0 8.5:
    with every row a multiple of 256 nothing falls back, and the file ratio lies between 4.5/8.5 and 6.5625/8.5."""
    folder = k_exports["llama"].folder
    q4, q8 = folder / "run-q4_k_m.gguf", folder / "run-q8_0.gguf"
    matrices = {name: kind for name, kind in tensor_types(q4).items() if not name.endswith("norm.weight")}
    assert set(matrices.values()) <= {"Q4_K", "Q6_K"} and "Q4_K" in matrices.values()
    assert set(tensor_types(q8).values()) == {"Q8_0", "F32"}
    ratio = q4.stat().st_size / q8.stat().st_size
    assert 4.5 / 8.5 < ratio < 6.5625 / 8.5, ratio
    assert metadata(q4)["general.file_type"] == 15 and metadata(q8)["general.file_type"] == 7


# ----------------------------------------------------------------------------- gguf-lora


def greedy(llm, ids, stop, limit=24):
    tokens = []
    for token in llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0):
        tokens.append(token)
        if token == stop or len(tokens) == limit:
            break
    return tokens


@pytest.mark.slow
def test_gguf_lora_on_its_base_generates_like_the_merged_gguf(k_runs, tmp_path, colour_prompts):
    run = k_runs["llama"]
    merged, lora = export_run(run, ["gguf-lora", "gguf"], tmp_path, dtype="fp32", gguf_types=["f16"])
    assert (merged.format, lora.format) == ("gguf", "gguf-lora")
    base_file, lora_file = lora.manifest["details"]["base_gguf"], lora.manifest["details"]["lora_gguf"]
    assert lora_file == "run-lora-f16.gguf" and metadata(lora.folder / lora_file)["general.type"] == "adapter"
    modelfile = (lora.folder / "Modelfile").read_text()
    assert f"FROM ./{base_file}\nADAPTER ./{lora_file}\n" in modelfile
    checks = lora.manifest["verification"]
    assert checks["base_plus_lora_vs_merged_gguf"]["identical"] is True
    assert checks["base_plus_lora_vs_hf"]["continuation_tokens_matched"] == [16, 16, 16]

    tokenizer = AutoTokenizer.from_pretrained(str(run / "adapter"))
    stop = tokenizer.convert_tokens_to_ids("<|im_end|>")
    prompts = [tokenizer(tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True),
                         add_special_tokens=False)["input_ids"] for p in colour_prompts]  # three Turkish prompts
    outputs = {}
    for key, path, adapter in (("merged", merged.folder / "run-f16.gguf", None),
                               ("lora", lora.folder / base_file, str(lora.folder / lora_file)),
                               ("base", lora.folder / base_file, None)):
        llm = Llama(str(path), n_ctx=256, verbose=False, n_threads=2, lora_path=adapter)
        outputs[key] = [greedy(llm, ids, stop) for ids in prompts]
        llm.close()
    assert outputs["lora"] == outputs["merged"]
    assert all(reply[-1] == stop for reply in outputs["lora"])  # the trained reply, ended like training taught
    assert outputs["base"] != outputs["lora"]  # the adapter is what makes the difference


def test_gguf_lora_needs_a_lora_run(dora_run, tmp_path):
    with pytest.raises(AyarError, match="gguf-lora needs a LoRA run; .* is dora"):
        export_run(dora_run, ["gguf-lora"], tmp_path)


# ----------------------------------------------------------------------------- a converter failure


@pytest.mark.slow
def test_broken_config_gives_one_line_and_publishes_nothing(k_runs, tmp_path, monkeypatch):
    import json

    from ayar.export import gguf_export

    real = gguf_export._save_fp32

    def broken(model, tokenizer, folder):
        saved = real(model, tokenizer, folder)
        config = json.loads((saved / "config.json").read_text())
        config["architectures"] = ["NoSuchModelForCausalLM"]
        (saved / "config.json").write_text(json.dumps(config))
        return saved

    monkeypatch.setattr(gguf_export, "_save_fp32", broken)
    run = k_runs["qwen2"]
    before = (run / "exports.jsonl").read_text() if (run / "exports.jsonl").exists() else ""
    with pytest.raises(converter.ConverterError) as caught:
        export_run(run, ["gguf"], tmp_path / "out", gguf_types=["q4_k_m"])
    message = str(caught.value)
    assert "\n" not in message and "NoSuchModelForCausalLM is not supported" in message
    assert "nothing was published" in message
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["gguf.convert-failed.log"]
    assert "is not supported" in (tmp_path / "out" / "gguf.convert-failed.log").read_text()
    assert ((run / "exports.jsonl").read_text() if (run / "exports.jsonl").exists() else "") == before
