"""An export never replaces the run folder's own files, even with --overwrite."""

from __future__ import annotations

import json

import pytest
import yaml

from ayar.errors import AyarError
from ayar.export.run import export_run


@pytest.mark.parametrize("out", ["run", "run/adapter/..", "link"])
def test_export_refuses_to_write_over_the_run_it_reads(tmp_path, out):
    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    config = json.dumps({"r": 4, "peft_type": "LORA"})
    (run / "adapter" / "adapter_config.json").write_text(config)
    (run / "recipe.yaml").write_text(yaml.safe_dump({"model": {"path": str(tmp_path)}, "data": {"train": "t.jsonl"}}))
    (tmp_path / "link").symlink_to(run, target_is_directory=True)
    # `--out RUN --format adapter --overwrite` would replace RUN/adapter, the very adapter being exported.
    with pytest.raises(AyarError, match="the adapter export .* would overwrite the run's adapter"):
        export_run(run, ["adapter"], tmp_path / out, overwrite=True)
    assert (run / "adapter" / "adapter_config.json").read_text() == config
