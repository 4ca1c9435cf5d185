"""The prepare stage's working state on disk and in memory: hidden output files and the per-record key table."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ayar.data.readers import Source
from ayar.errors import AyarError
from ayar.govern.manifest import file_record

OUTPUTS = ("train.jsonl", "val.jsonl", "test.jsonl", "rejects.jsonl")


@dataclass
class Table:
    """What stays in memory per record that reached the work file (index = line of the work file)."""

    source: list[int] = field(default_factory=list)
    number: list[int] = field(default_factory=list)
    keys: list[bytes] = field(default_factory=list)
    sigs: list[Any] = field(default_factory=list)
    groups: list[str | None] = field(default_factory=list)
    strata: list[str | None] = field(default_factory=list)
    pii: list[tuple[str, ...] | None] = field(default_factory=list)  # entity type of each value redacted
    synthetic: list[bool] = field(default_factory=list)  # the source line carries meta.synthetic (ayar synth)

    def __len__(self) -> int:
        return len(self.source)

    def add(self, source: int, number: int, group: str | None, stratum: str | None,
            pii: tuple[str, ...] | None, synthetic: bool = False) -> None:
        """One more record (its duplicate keys are added per batch, beside)."""
        self.source.append(source)
        self.number.append(number)
        self.groups.append(group)
        self.strata.append(stratum)
        self.pii.append(pii)
        self.synthetic.append(synthetic)


class Workspace:
    """Hidden temporary files in the output folder, moved into place only by :meth:`commit`."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        tag = f"{os.getpid()}.{secrets.token_hex(4)}"
        self.paths = {name: out_dir / f".{name}.{tag}.tmp" for name in (*OUTPUTS, "data_card.md", "work.jsonl")}
        self.files = {name: open(path, "x", encoding="utf-8", newline="\n") for name, path in self.paths.items()}

    def close(self, name: str) -> dict[str, Any]:
        """Flush and close one file; returns its sha256 and size."""
        self.files[name].flush()
        os.fsync(self.files[name].fileno())
        self.files[name].close()
        return file_record(self.paths[name])

    def commit(self) -> None:
        for name in (*OUTPUTS, "data_card.md"):
            os.replace(self.paths[name], self.out_dir / name)

    def cleanup(self) -> None:
        for name, fh in self.files.items():
            fh.close()
            self.paths[name].unlink(missing_ok=True)


def check_outputs(sources: list[Source], out_dir: Path) -> None:
    targets = {(out_dir / name).resolve() for name in (*OUTPUTS, "manifest.json", "data_card.md")}
    for source in sources:
        if source.path.resolve() in targets or out_dir.resolve() == source.path.resolve():
            raise AyarError(f"prepare.output_dir: writing to {out_dir} would overwrite the source {source.path}; "
                            "choose another output_dir")
