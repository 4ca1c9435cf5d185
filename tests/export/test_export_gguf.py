"""GGUF export: the RoPE reordering, the metadata, a round trip through llama.cpp, and refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGUFReader
from llama_cpp import Llama
from transformers import AutoModelForCausalLM, AutoTokenizer

from ayar.errors import AyarError
from ayar.export.gguf_vocab import llama_cpp_pre_tokenizer
from ayar.export.gguf_writer import interleave_rope_rows
from ayar.export.run import export_run
from ayar.export.verify import VerificationError

# ----------------------------------------------------------------------------- RoPE layout


def test_interleave_rope_rows_by_hand():
    rows = np.arange(8, dtype=np.float32)  # two heads of four rows
    assert interleave_rope_rows(rows, 2).tolist() == [0, 2, 1, 3, 4, 6, 5, 7]
    matrix = np.arange(12, dtype=np.float32).reshape(4, 3)  # one head, rows of width 3
    assert interleave_rope_rows(matrix, 1)[:, 0].tolist() == [0, 6, 3, 9]


def test_reordered_rows_turn_rotate_half_rope_into_interleaved_rope():
    """P(rope_rotate_half(W x)) == rope_interleaved(P(W) x): llama.cpp's rope on the reordered weights."""
    torch.manual_seed(0)
    d, pos, theta = 8, 5, 10000.0
    w, x = torch.randn(d, 6), torch.randn(6)
    freqs = pos * theta ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)  # (d/2,)
    cos, sin = torch.cos(freqs), torch.sin(freqs)
    q = w @ x
    half = q[: d // 2], q[d // 2:]
    rotate_half = torch.cat([half[0] * cos - half[1] * sin, half[1] * cos + half[0] * sin])
    p = torch.from_numpy(interleave_rope_rows(w.numpy(), 1)) @ x
    even, odd = p[0::2], p[1::2]
    interleaved = torch.stack([even * cos - odd * sin, odd * cos + even * sin], dim=1).reshape(d)
    reordered = torch.from_numpy(interleave_rope_rows(rotate_half.numpy(), 1))
    torch.testing.assert_close(interleaved, reordered)


def test_llama3_rope_scaling_becomes_rope_freqs(export_bases, tmp_path, monkeypatch):
    """Llama 3.1's scaled RoPE survives the conversion: f32 logits match; without the factors they do not."""
    from transformers import LlamaConfig

    import ayar.export.gguf_writer as writer
    from ayar.export import verify
    from ayar.export.gguf_vocab import gguf_vocab

    rope = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    config = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, initializer_range=0.1,
                         tie_word_embeddings=True, rope_parameters=rope)
    # Wavelengths 2*pi*10000**(i/16): under 16 (= 64/4) unscaled, over 64 divided by 8, smooth in between.
    factors = writer.rope_freq_factors(config)
    assert factors[:2].tolist() == [1.0, 1.0] and factors[5:].tolist() == [8.0] * 11
    assert 1.0 < factors[2] < factors[3] < factors[4] < 8.0
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(export_bases["llama"]))
    references = verify.hf_reference(model, verify.prompt_ids(tokenizer))
    vocab = gguf_vocab(tokenizer, 512)

    def written(name):
        return writer.write_gguf(tmp_path / name, model, vocab, gguf_type="f32", name="x", chat_template=None,
                                 eot_id=1)

    assert verify.check_gguf(written("scaled.gguf"), "f32", references)["max_logit_diff_relative"] < 1e-5
    monkeypatch.setattr(writer, "rope_freq_factors", lambda config: None)
    with pytest.raises(VerificationError, match="greedy continuation|logits differ"):
        verify.check_gguf(written("unscaled.gguf"), "f32", references)


def test_unsupported_rope_scaling_is_refused():
    from transformers import Qwen2Config

    from ayar.export.gguf_writer import rope_freq_factors

    config = Qwen2Config(rope_parameters={"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0,
                                          "original_max_position_embeddings": 32768})
    with pytest.raises(AyarError, match="'yarn' is not supported"):
        rope_freq_factors(config)


# ----------------------------------------------------------------------------- tokenizer


def test_pre_tokenizer_names_for_llama_cpp():
    assert llama_cpp_pre_tokenizer({"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                                    "use_regex": True}) == "gpt-2"
    qwen = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
            r"\s+(?!\S)|\s+")
    split = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": qwen}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]}
    assert llama_cpp_pre_tokenizer(split) == "qwen2"
    split["pretokenizers"][0]["pattern"]["Regex"] = qwen.replace(r"\p{N}|", r"\p{N}{1,3}|")
    assert llama_cpp_pre_tokenizer(split) == "llama-bpe"
    with pytest.raises(AyarError, match="no pre-tokenizer known"):
        llama_cpp_pre_tokenizer({"type": "Metaspace", "replacement": "▁"})


# ----------------------------------------------------------------------------- round trip


def gguf_file(exports, arch, gguf_type):
    return exports[arch]["gguf"].folder / f"run-{gguf_type}.gguf"


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_gguf_tokenises_like_the_hf_tokenizer(arch, lora_exports, colour_prompts):
    tokenizer = AutoTokenizer.from_pretrained(str(lora_exports[arch]["merged"].folder))
    texts = ["İstanbul'da güzel bir gün", "Fiyat: 1.299,90 TL (KDV dahil) 🙂", "  a\n\n b\tc  ",
             tokenizer.apply_chat_template(colour_prompts[0], tokenize=False, add_generation_prompt=True)]
    vocab = Llama(str(gguf_file(lora_exports, arch, "q8_0")), vocab_only=True, verbose=False)
    for text in texts:
        expected = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert vocab.tokenize(text.encode(), add_bos=False, special=True) == expected, text
    vocab.close()


def hf_greedy(model, ids, limit=40):
    """Greedy ids until generation_config's stop ids (<|im_end|>) or ``limit``."""
    out = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=limit, temperature=None, top_p=None,
                         top_k=None)
    return out[0, len(ids):].tolist()


def llama_cpp_greedy(llm, ids, stop, limit=40):
    tokens = []
    for token in llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0):
        tokens.append(token)
        if token == stop or len(tokens) == limit:
            return tokens
    return tokens


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_gguf_generates_like_the_merged_model(arch, lora_exports, colour_prompts):
    """f32/f16 (and bf16 for llama): identical greedy replies ending in <|im_end|>; q8_0: top-1 agreement >= 90%."""
    folder = lora_exports[arch]["merged"].folder
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    stop = tokenizer.convert_tokens_to_ids("<|im_end|>")
    prompts = [tokenizer(tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True),
                         add_special_tokens=False)["input_ids"] for p in colour_prompts]
    expected = [hf_greedy(model, ids) for ids in prompts]
    assert all(reply[-1] == stop and len(reply) < 40 for reply in expected)
    exact = ["f32", "f16", "bf16"] if arch == "llama" else ["f32", "f16"]
    for gguf_type in exact:
        llm = Llama(str(gguf_file(lora_exports, arch, gguf_type)), n_ctx=256, verbose=False, n_threads=2)
        assert [llama_cpp_greedy(llm, ids, stop) for ids in prompts] == expected, gguf_type
        llm.close()

    llm = Llama(str(gguf_file(lora_exports, arch, "q8_0")), n_ctx=256, logits_all=True, verbose=False, n_threads=2)
    agree = total = 0
    for ids, reply in zip(prompts, expected, strict=True):
        sequence = ids + reply
        llm.reset()
        llm.eval(sequence)
        with torch.no_grad():
            reference = model(torch.tensor([sequence])).logits[0].argmax(-1).numpy()
        agree += int((np.array(llm.scores[: len(sequence)]).argmax(-1) == reference).sum())
        total += len(sequence)
    llm.close()
    assert agree / total >= 0.9
    verification = lora_exports[arch]["gguf"].manifest["verification"]
    assert verification["q8_0"]["top1_agreement"] >= 0.9
    assert verification["f32"]["max_logit_diff_relative"] < 1e-3


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_gguf_metadata_holds_template_stops_and_types(arch, lora_exports):
    tokenizer = AutoTokenizer.from_pretrained(str(lora_exports[arch]["merged"].folder))

    def read(gguf_type):
        reader = GGUFReader(gguf_file(lora_exports, arch, gguf_type))
        return reader, {name: field.contents() for name, field in reader.fields.items()}

    reader, meta = read("q8_0")
    assert meta["general.architecture"] == arch
    assert meta["tokenizer.chat_template"] == tokenizer.chat_template
    assert meta["tokenizer.ggml.eot_token_id"] == meta["tokenizer.ggml.eos_token_id"] == 1  # <|im_end|>
    assert meta["tokenizer.ggml.padding_token_id"] == 0 and meta["tokenizer.ggml.add_bos_token"] is False
    assert "tokenizer.ggml.bos_token_id" not in meta  # ChatML has no BOS
    assert meta["tokenizer.ggml.model"] == "gpt2"
    assert meta["tokenizer.ggml.pre"] == {"llama": "gpt-2", "qwen2": "qwen2"}[arch]
    assert len(meta["tokenizer.ggml.tokens"]) == 512 and meta["tokenizer.ggml.tokens"][1] == "<|im_end|>"
    assert meta["tokenizer.ggml.token_type"][:3] == [3, 3, 3] and meta["tokenizer.ggml.token_type"][-1] == 5
    assert meta[f"{arch}.context_length"] == 1024 and meta[f"{arch}.attention.head_count_kv"] == 1
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == "Q8_0" and types["blk.0.attn_norm.weight"] == "F32"
    assert "output.weight" not in types  # tied embeddings: llama.cpp reuses token_embd
    assert ("blk.0.attn_q.bias" in types) == (arch == "qwen2")
    _, f16 = read("f16")
    assert f16["general.file_type"] == 1 and meta["general.file_type"] == 7


def test_modelfile_matches_the_chatml_template(lora_exports):
    text = (lora_exports["llama"]["gguf"].folder / "Modelfile").read_text()
    body = text.split("\n", 2)[2]
    assert body == (
        "FROM ./run-f32.gguf\n"
        'TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}\n'
        "{{ .Content }}<|im_end|>\n"
        '{{ end }}<|im_start|>assistant\n"""\n'
        'PARAMETER stop "<|im_end|>"\n'
        "PARAMETER temperature 0.7\n"
        "PARAMETER top_p 0.9\n"
        "PARAMETER num_ctx 1024\n"
    )
    assert "ollama create run -f Modelfile" in text.split("\n", 2)[1]
    assert "ollama create run -f Modelfile" in lora_exports["llama"]["gguf"].instructions


def test_modelfile_writes_bos_only_when_the_runtime_does_not_add_it():
    from types import SimpleNamespace

    from ayar.chat.templates import get_template
    from ayar.export.ollama import modelfile

    tokenizer = SimpleNamespace(chat_template=get_template("llama3").source)
    kwargs = {"stops": ["<|eot_id|>"], "context_length": 8192, "model_name": "m", "run_name": "r"}
    without = modelfile("m.gguf", tokenizer, add_bos=False, **kwargs)
    assert 'TEMPLATE """<|begin_of_text|>{{- range .Messages }}<|start_header_id|>' in without
    assert 'TEMPLATE """{{- range .Messages }}' in modelfile("m.gguf", tokenizer, add_bos=True, **kwargs)
    assert without.endswith('PARAMETER stop "<|eot_id|>"\nPARAMETER temperature 0.7\nPARAMETER top_p 0.9\n'
                            "PARAMETER num_ctx 4096\n")
    unknown = modelfile("m.gguf", SimpleNamespace(chat_template="{{ messages }}"), add_bos=False, **kwargs)
    assert "TEMPLATE" not in unknown.replace("# No TEMPLATE", "")


# ----------------------------------------------------------------------------- refusals


def assert_nothing_published(out, run, lines_before):
    leftovers = [p.name for p in out.iterdir()] if out.exists() else []
    assert leftovers == [], leftovers  # neither gguf/ nor a .gguf.partial-* staging folder
    log = run / "exports.jsonl"
    assert (len(log.read_text().splitlines()) if log.exists() else 0) == lines_before


def lines(run):
    log = run / "exports.jsonl"
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_missing_rope_reordering_is_caught(lora_runs, tmp_path, monkeypatch):
    import ayar.export.gguf_writer as writer

    monkeypatch.setattr(writer, "interleave_rope_rows", lambda weight, n_heads: weight)
    run, before = lora_runs["llama"], lines(lora_runs["llama"])
    with pytest.raises(VerificationError, match="greedy continuation|logits differ"):
        export_run(run, ["gguf"], tmp_path / "out", gguf_types=["f32"])
    assert_nothing_published(tmp_path / "out", run, before)


def test_corrupted_tensor_is_caught(lora_runs, tmp_path, monkeypatch):
    import ayar.export.gguf_writer as writer

    real = writer.gguf_tensors

    def corrupted(state_dict, config):
        for name, array in real(state_dict, config):
            yield name, (array * 3 if name == "blk.1.ffn_down.weight" else array)

    monkeypatch.setattr(writer, "gguf_tensors", corrupted)
    run, before = lora_runs["qwen2"], lines(lora_runs["qwen2"])
    with pytest.raises(VerificationError, match="run-f16.gguf"):
        export_run(run, ["gguf"], tmp_path / "out", gguf_types=["f16"])
    assert_nothing_published(tmp_path / "out", run, before)


def test_wrong_pre_tokenizer_is_caught(lora_runs, tmp_path, monkeypatch):
    import ayar.export.gguf_vocab as vocab

    # llama.cpp's fallback when the pre-tokenizer is unknown; it splits "İstanbul'da" unlike GPT-2's regex.
    # (With the 459-token tiny vocabulary, "qwen2" happens to give the same ids as "gpt-2" on every check text.)
    monkeypatch.setattr(vocab, "llama_cpp_pre_tokenizer", lambda spec: "default")
    run, before = lora_runs["llama"], lines(lora_runs["llama"])
    with pytest.raises(VerificationError, match="tokenises"):
        export_run(run, ["gguf"], tmp_path / "out", gguf_types=["q8_0"])
    assert_nothing_published(tmp_path / "out", run, before)
