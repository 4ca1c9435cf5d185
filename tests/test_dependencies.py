"""Offline audit: pins and pyproject floors are at or above the advisory floors in security/advisories.yaml."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).parents[1]
tomllib = pytest.importorskip("tomllib")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503


def advisories() -> dict[str, tuple[Version, str]]:
    table = yaml.safe_load((ROOT / "security" / "advisories.yaml").read_text(encoding="utf-8"))
    return {normalise(name): (Version(floor), why) for name, (floor, why) in table.items()}


def pins() -> dict[str, Version]:
    out = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            out[normalise(name)] = Version(version.split(";")[0].strip())
    return out


def floors() -> dict[str, Version | None]:
    """Each direct requirement (runtime, extras, build) -> its lowest allowed version (None: no floor)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    specs = [*project["project"]["dependencies"], *project["build-system"]["requires"],
             *(s for extra in project["project"].get("optional-dependencies", {}).values() for s in extra)]
    out: dict[str, Version | None] = {}
    for spec in map(Requirement, specs):
        lows = [Version(s.version) for s in spec.specifier if s.operator in (">=", "==", "~=")]
        low = max(lows) if lows else None
        name = normalise(spec.name)
        out[name] = low if name not in out or out[name] is None else max(out[name], low or out[name])
    return out


def test_pins_are_at_or_above_every_advisory_floor():
    pinned = pins()
    stale = [f"{name}=={pinned[name]} (needs >= {floor}: {why})" for name, (floor, why) in advisories().items()
             if name in pinned and pinned[name] < floor]
    assert not stale, "constraints.txt pins versions with known advisories:\n" + "\n".join(stale)


def test_direct_dependencies_cannot_resolve_below_an_advisory_floor():
    direct = floors()
    low = [f"{name}: floor {direct[name]} (needs >= {floor}: {why})" for name, (floor, why) in advisories().items()
           if name in direct and (direct[name] is None or direct[name] < floor)]
    assert not low, "pyproject.toml allows versions with known advisories:\n" + "\n".join(low)


def test_the_table_names_only_packages_ayar_installs():
    known = set(pins()) | set(floors())
    assert not [name for name in advisories() if name not in known]
    assert {"jinja2", "cryptography", "starlette", "h11"} <= set(floors())  # the server's and sandbox's own
