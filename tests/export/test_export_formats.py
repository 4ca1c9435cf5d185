"""Adapter and vLLM exports, manifests and the export log, request checks and the CLI."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from ayar.cli import app
from ayar.errors import AyarError
from ayar.export.manifest import EXPORT_MANIFEST, changed_files
from ayar.export.run import export_run


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_adapter_export_names_its_base_by_content(lora_exports, lora_runs, export_bases):
    result, run = lora_exports["llama"]["adapter"], lora_runs["llama"]
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "chat_template.jinja"):
        assert sha256(result.folder / name) == sha256(run / "adapter" / name)
    base = result.manifest["base_model"]
    assert base["path"] == str(export_bases["llama"].resolve())
    assert base["files"]["model.safetensors"]["sha256"] == sha256(export_bases["llama"] / "model.safetensors")
    assert json.loads((result.folder / "adapter_config.json").read_text())["base_model_name_or_path"] == \
        str(export_bases["llama"])
    assert result.manifest["verification"]["copy"] == {"files_identical": True, "matches_run_manifest": True}
    base_model = AutoModelForCausalLM.from_pretrained(str(export_bases["llama"]), dtype=torch.float32)
    PeftModel.from_pretrained(base_model, str(result.folder))  # loads as a PEFT adapter


def test_manifests_hash_every_file_and_the_run_logs_each_export(lora_exports, lora_runs):
    results = lora_exports["qwen2"]
    log = [json.loads(line) for line in (lora_runs["qwen2"] / "exports.jsonl").read_text().splitlines()]
    logged = {entry["path"]: entry for entry in log}
    for fmt, result in results.items():
        manifest = json.loads((result.folder / EXPORT_MANIFEST).read_text())
        on_disk = sorted(p.relative_to(result.folder).as_posix() for p in result.folder.rglob("*")
                         if p.is_file() and p.name != EXPORT_MANIFEST)
        assert sorted(manifest["files"]) == on_disk, fmt
        for name, record in manifest["files"].items():
            assert record["sha256"] == sha256(result.folder / name)
        assert manifest["format"] == fmt and manifest["ayar_version"] == "0.1.0" and manifest["verified"] is True
        assert manifest["run"]["run_manifest_sha256"] == sha256(lora_runs["qwen2"] / "run_manifest.json")
        entry = logged[str(result.folder.resolve())]
        assert entry["format"] == fmt and entry["manifest_sha256"] == sha256(result.folder / EXPORT_MANIFEST)
        assert changed_files(result.folder) == []
    ours = {str(r.folder.resolve()) for r in results.values()}
    assert [e["format"] for e in log if e["path"] in ours] == ["adapter", "gguf", "vllm", "merged"]  # write order


def test_changed_files_reports_tampering(lora_runs, tmp_path):
    (result,) = export_run(lora_runs["llama"], ["adapter"], tmp_path)
    (result.folder / "adapter_config.json").write_text("{}")
    (result.folder / "extra.txt").write_text("x")
    (result.folder / "tokenizer.json").unlink()
    assert changed_files(result.folder) == ["adapter_config.json", "extra.txt", "tokenizer.json"]


def test_vllm_serves_two_lora_adapters_on_one_base(lora_runs, export_bases, tmp_path):
    second = tmp_path / "second-run"
    shutil.copytree(lora_runs["llama"], second, ignore=shutil.ignore_patterns("export*"))
    (result,) = export_run(lora_runs["llama"], ["vllm"], tmp_path / "out", extra_adapters=[second])
    script = (result.folder / "serve.sh").read_text()
    assert subprocess.run(["bash", "-n", str(result.folder / "serve.sh")]).returncode == 0
    assert f"exec vllm serve {export_bases['llama']} \\\n" in script
    for line in ("--enable-lora", "--max-lora-rank 8", "--max-loras 2", '--lora-modules run="$HERE/adapters/run"',
                 '--lora-modules second-run="$HERE/adapters/second-run"',
                 '--chat-template "$HERE/chat_template.jinja"'):
        assert f"  {line} \\\n" in script, line
    assert (result.folder / "serve.sh").stat().st_mode & 0o111
    for name in ("run", "second-run"):
        assert sha256(result.folder / f"adapters/{name}/adapter_model.safetensors") == \
            sha256(lora_runs["llama"] / "adapter/adapter_model.safetensors")
    client = (result.folder / "client.py").read_text()
    compile(client, "client.py", "exec")
    assert "model='run'" in client and '"stop_token_ids": [1]' in client
    assert result.manifest["dtype"] is None and result.manifest["details"]["adapters"] == ["run", "second-run"]


def test_vllm_serves_a_dora_run_merged(dora_run, tmp_path):
    (result,) = export_run(dora_run, ["vllm"], tmp_path, dtype="fp32")
    script = (result.folder / "serve.sh").read_text()
    assert 'exec vllm serve "$HERE/model" \\\n' in script and "--served-model-name run" in script
    assert "--enable-lora" not in script
    assert result.manifest["verification"]["merge"]["max_abs_logit_diff"] < 1e-4
    AutoModelForCausalLM.from_pretrained(str(result.folder / "model"))


def test_requests_are_checked_before_any_work(lora_runs, full_run, tmp_path):
    with pytest.raises(AyarError) as caught:
        export_run(lora_runs["llama"], ["zip", "gguf"], tmp_path, dtype="fp8", gguf_types=["q4_k"])
    message = str(caught.value)
    assert "'zip'" in message and "'fp8'" in message and "'q4_k'" in message  # all problems at once
    with pytest.raises(AyarError, match="full fine-tune: it has no adapter"):
        export_run(full_run, ["adapter"], tmp_path)
    with pytest.raises(AyarError, match="trained on .*qwen2, not on this run's base"):
        export_run(lora_runs["llama"], ["vllm"], tmp_path, extra_adapters=[lora_runs["qwen2"]])
    with pytest.raises(AyarError, match="not a run folder"):
        export_run(tmp_path, ["merged"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_exports_and_refuses_to_overwrite(lora_runs, tmp_path):
    runner = CliRunner()
    args = ["export", str(lora_runs["llama"]), "--format", "adapter,vllm", "--out", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "PEFT:" in result.stdout and "vLLM:" in result.stdout and "ayar serve" in result.stdout
    assert (tmp_path / "adapter/adapter_model.safetensors").is_file() and (tmp_path / "vllm/serve.sh").is_file()
    again = runner.invoke(app, args)
    assert isinstance(again.exception, AyarError) and "--overwrite" in str(again.exception)
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0


def test_export_for_serving_gives_merged_gguf_and_instructions(lora_runs, tmp_path):
    from ayar.export.run import export_for_serving

    results, text = export_for_serving(lora_runs["qwen2"], tmp_path, gguf_type="f16")
    assert [r.format for r in results] == ["gguf", "merged"]
    assert results[0].files == ["run-f16.gguf", "Modelfile"] and results[0].manifest["verified"] is True
    for expected in ("ollama create run -f Modelfile", "llama-server -m", "from_pretrained(", "ayar serve"):
        assert expected in text, expected
