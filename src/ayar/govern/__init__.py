"""Governance records: run manifests (what went in, what came out, on which machine)."""

from ayar.govern.manifest import MANIFEST_NAME, build_manifest, write_json_atomic

__all__ = ["MANIFEST_NAME", "build_manifest", "write_json_atomic"]
