"""bench/gpu.sh --dry-run: the GPU bench runs end to end on the CPU with tiny shapes (so CI keeps it working)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_bench_dry_run_writes_comparable_results(tmp_path):
    out = tmp_path / "gpu.json"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(["bash", str(ROOT / "bench/gpu.sh"), "--dry-run", "--out", str(out), "--workdir",
                          str(tmp_path / "work")], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["environment"]["bf16_matmul_tflops"] > 0
    lora = next(r for r in results["results"] if r["mode"] == "lora")
    for framework in ("ayar", "trl"):
        assert lora[framework]["tokens_per_s"] > 0 and 0 < lora[framework]["mfu"] < 1
        assert len(lora[framework]["losses"]) == 4
    # same model, data, batches and settings: the two loss curves agree
    assert lora["compare"]["max_loss_diff"] < 0.01
    assert "| tiny | lora | ayar |" in run.stdout
