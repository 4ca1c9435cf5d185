"""What each stage appends to the audit ledger: one function per stage, called once at the stage's end.

Every entry names the files it read (``inputs``) and wrote (``outputs``) by path and
sha256, so ``ayar audit lineage`` can follow content from source files to served
adapters and ``ayar audit verify`` can re-hash them. Entries hold counts, hashes,
settings and metrics, never personal data: no record text, no identifier, no
redacted example.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ayar.govern.ledger import Ledger, default_ledger_path, folder_refs, ref, signing_key_from_env
from ayar.govern.manifest import sha256_file


def open_ledger(governance=None) -> Ledger:
    """The ledger a recipe's ``governance`` section names (default: :func:`default_ledger_path`), signing
    with the key named by ``$AYAR_LEDGER_KEY`` when it is set."""
    path = Path(governance.ledger) if governance is not None and governance.ledger else default_ledger_path()
    return Ledger(path, signing_key_from_env())


def run_governance(run_dir: str | Path):
    """The ``governance`` section of a run folder's recipe.yaml (None when it cannot be read)."""
    from ayar.errors import AyarError
    from ayar.recipe import load_recipe

    try:
        return load_recipe(Path(run_dir) / "recipe.yaml").governance
    except AyarError:
        return None


def ledger_for_run(run_dir: str | Path) -> Ledger:
    """The ledger a run records into (its recipe's ``governance.ledger``)."""
    return open_ledger(run_governance(run_dir))


# ----------------------------------------------------------------------------- prepare


def record_prepare(summary: dict[str, Any], governance=None) -> dict[str, Any]:
    """Record a finished ``prepare``: sources, outputs, redaction, dedup and canary figures, KVKK fields.

    The dataset's subject index (keyed hashes only) is copied into the ledger's store, so erasure
    lookups keep working after the dataset folder is deleted.
    """
    from ayar.govern.config import GovernanceSection
    from ayar.ui import console

    ledger = open_ledger(governance)
    governance = governance or GovernanceSection()
    out = Path(summary["output_dir"])
    inputs: dict[str, dict] = {}
    for source in summary["sources"]:
        if "sha256" in source:
            inputs[f"source:{source['name']}"] = {"path": str(Path(source["path"]).resolve()),
                                                  "sha256": source["sha256"]}
        else:  # a save_to_disk folder
            inputs.update(folder_refs(source["path"], f"source:{source['name']}/", source.get("files")))
    outputs = {name: {"path": str((out / name).resolve()), "sha256": rec["sha256"]}
               for name, rec in summary["outputs"].items()}
    outputs["manifest.json"] = ref(out / "manifest.json")
    index = dict(summary.get("subject_index") or {})
    if index.get("written"):
        outputs["subjects.json"] = {"path": str((out / "subjects.json").resolve()), "sha256": index["sha256"]}
        copy = ledger.keep(out / "subjects.json", index["sha256"])
        outputs["subjects.json (ledger copy)"] = {"path": str(copy.resolve()), "sha256": index["sha256"]}
        index["copy"] = str(copy.resolve())
    else:
        console.print(f"warning: {index.get('reason', 'no subject index')}", style="yellow", markup=False)
    pii = summary["pii"]
    canaries = summary.get("canaries")
    data = {
        "output_dir": str(out.resolve()), "kind": summary["kind"],
        "steps": {s["step"]: s["records"] for s in summary["steps"]},
        "split_sizes": summary["split"]["sizes"], "rejects_by_reason": summary["rejects"]["by_reason"],
        "pii": {"enabled": pii["enabled"], "operators": pii["operators"], "by_entity": pii["by_entity"],
                "records_with_pii": pii["records_with_pii"], "records_dropped": pii["records_dropped"]},
        "dedup": {k: summary["dedup"][k] for k in ("exact_removed", "near_removed", "method")},
        "leakage": {k: v for k, v in summary["leakage"].items() if isinstance(v, (int, float, str))},
        "canaries": None if not canaries else {
            "count": len(canaries.get("values", [])), "repeats": canaries.get("repeats"),
            "template": canaries.get("template"),
            "values_sha256": sha256_text(json.dumps(canaries.get("values"), sort_keys=True))},
        "settings_sha256": sha256_text(json.dumps(summary["settings"], sort_keys=True)),
        "subject_index": index,
        "governance": governance.model_dump(mode="json", exclude={"ledger"}),
    }
    return ledger.append("prepare", data, inputs=inputs, outputs=outputs)


def record_derived(inputs: list[str | Path], outputs: list[str | Path], how: str, governance=None) -> dict[str, Any]:
    """Record data files made from other data files outside ``prepare`` (a mix, a subset, a conversion).

    Lineage and erasure lookups follow content through this entry: a person's records in an input
    are taken to be in the outputs.

    Args:
        how: what was done, in a few words (no personal data).
    """
    return open_ledger(governance).append(
        "derive", {"how": how}, inputs={f"in:{Path(p).name}": ref(p) for p in inputs},
        outputs={f"out:{Path(p).name}": ref(p) for p in outputs})


def sha256_text(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ----------------------------------------------------------------------------- train


def record_train(recipe, run_dir: str | Path, manifest: dict[str, Any], *, resumed_from: str | None = None,
                 manifest_path: str | Path | None = None) -> dict[str, Any]:
    """Record a finished training run from its run manifest (no file is hashed twice).

    Inputs: the data files, every base-model file, an init adapter's files; outputs: the adapter or
    model files, summary.json, recipe.yaml and the run manifest.
    """
    run = Path(run_dir).resolve()
    inputs = {f"data:{Path(p).name}": {"path": str(Path(p).resolve()), "sha256": rec["sha256"]}
              for p, rec in manifest["inputs"]["data_files"].items()}
    base = manifest["base_model"]
    if base.get("path"):
        inputs.update(folder_refs(base["path"], "base:", base["files"]))
    init = recipe.model.init_adapter
    if init:
        from ayar.train.reference import adapter_folder

        inputs.update(folder_refs(adapter_folder(init), "init_adapter:"))
    weights = {rel: rec for rel, rec in manifest["outputs"].items()
               if rel.split("/")[0] in ("adapter", "model") or rel in ("summary.json", "recipe.yaml")}
    outputs = folder_refs(run, "", weights)
    if manifest_path is not None:
        outputs["run_manifest.json"] = ref(manifest_path)
    data = {"run_dir": str(run), "method": recipe.method, "adapter": recipe.adapter.type,
            "base_model": {k: base.get(k) for k in ("source", "path", "id", "revision", "commit")},
            "recipe_sha256": sha256_file(run / "recipe.yaml"), "seed": manifest["seed"],
            "started_at": manifest["started_at"], "ended_at": manifest["ended_at"], "resumed_from": resumed_from,
            "metrics": manifest["final_metrics"],
            "hardware": {k: manifest["environment"].get(k) for k in ("cpu", "cpu_count", "gpus", "cuda")},
            "ayar": manifest["environment"].get("ayar")}
    return open_ledger(recipe.governance).append("train", data, inputs=inputs, outputs=outputs)


def record_interrupted(recipe, step: int) -> dict[str, Any]:
    """Record a training run stopped by a signal (it wrote a checkpoint and can be resumed)."""
    return open_ledger(recipe.governance).append(
        "train_interrupted", {"run_dir": str(Path(recipe.output_dir).resolve()), "step": step})


# ----------------------------------------------------------------------------- eval


def weights_refs(run_dir: Path) -> dict[str, dict]:
    """Refs of a run's adapter/ or model/ files (what an evaluation, export or server used)."""
    for name in ("adapter", "model"):
        if (run_dir / name).is_dir():
            return folder_refs(run_dir / name, f"{name}/")
    return {}


def record_eval(run_dir: str | Path, result: dict[str, Any]) -> dict[str, Any]:
    """Record an evaluation: the data's hash, the metrics with intervals, the audits and the gate's verdict."""
    from ayar.govern.gates import GateError, decide

    run = Path(run_dir).resolve()
    out = run / "eval"
    inputs = weights_refs(run)
    outputs = {f"eval/{p.name}": ref(p) for p in sorted(out.glob("*.json"))
               if p.stem in ("comparison", "judge", "preference", "forgetting", "memorisation")}
    comparison = result.get("comparison")
    data: dict[str, Any] = {"run_dir": str(run)}
    if comparison:
        if Path(comparison["dataset"]).is_file():
            inputs["eval_data"] = ref(comparison["dataset"])
        data.update(n=comparison["n"], models=comparison["models"], metrics=[
            {k: row[k] for k in ("name", "base", "tuned", "diff", "ci95")} for row in comparison["metrics"]])
    for name in ("judge", "forgetting", "memorisation", "preference"):
        block = _read(out / f"{name}.json")
        if block is not None:
            data[name] = _audit_summary(name, block)
    try:
        data["gate"] = decide(run, check_fresh=False).to_dict()  # this evaluation is the latest
    except GateError as exc:
        data["gate"] = {"status": "failed", "failed": [line.strip() for line in str(exc).splitlines()[1:-1]]}
    return ledger_for_run(run).append("eval", data, inputs=inputs, outputs=outputs)


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _audit_summary(name: str, block: dict[str, Any]) -> dict[str, Any]:
    """The figures of an audit, without the per-example detail (and never a canary value)."""
    if name == "memorisation":
        canaries = block.get("canaries") or {}
        return {"max_exposure_bits": canaries.get("max"), "mean_exposure_bits": canaries.get("mean"),
                "membership": block.get("membership"), "regurgitation": block.get("regurgitation")}
    return {k: v for k, v in block.items() if isinstance(v, (int, float, str, bool)) or v is None}


# ----------------------------------------------------------------------------- export and serve


def record_export(run_dir: Path, fmt: str, folder: Path, manifest: dict[str, Any], gate) -> dict[str, Any]:
    """Record one published export: the run's weights in, the export's files out, verification, gate."""
    folder = folder.resolve()
    outputs = folder_refs(folder, "", manifest["files"])
    from ayar.export.manifest import EXPORT_MANIFEST

    outputs[EXPORT_MANIFEST] = ref(folder / EXPORT_MANIFEST)
    data = {"run_dir": str(Path(run_dir).resolve()), "format": fmt, "path": str(folder), "dtype": manifest["dtype"],
            "details": manifest["details"], "verified": manifest["verified"],
            "verification": _finite_summary(manifest["verification"]), "gate": gate.to_dict()}
    return ledger_for_run(run_dir).append("export", data, inputs=weights_refs(Path(run_dir).resolve()),
                                          outputs=outputs)


def _finite_summary(verification: dict[str, Any] | None) -> dict[str, Any] | None:
    if verification is None:
        return None
    return json.loads(json.dumps(verification, default=str, allow_nan=True).replace("NaN", "null"))


def gate_for_release(run_dir: Path, no_gate: bool, stage: str):
    """The release gate's decision for ``run_dir`` (``ayar.govern.gates.decide``); a bypass is recorded.

    Raises:
        GateError: the gate fails and ``no_gate`` is false.
    """
    from ayar.govern.gates import decide

    gate = decide(run_dir, bypass=no_gate)
    record_gate_bypass(run_dir, gate, stage)
    return gate


def record_gate_bypass(run_dir: Path, gate, stage: str) -> dict[str, Any] | None:
    """Record ``--no-gate`` on a run whose gate failed (nothing is recorded when it passed or has none)."""
    if gate.status != "bypassed":
        return None
    return ledger_for_run(run_dir).append("gate_bypassed", {"run_dir": str(Path(run_dir).resolve()),
                                                            "stage": stage, **gate.to_dict()})


def run_of(path: str | Path | None) -> Path | None:
    """The run folder ``path`` is, or whose ``adapter/`` or ``model/`` it is; None otherwise."""
    if not path:
        return None
    folder = Path(path).expanduser()
    if not folder.exists():
        return None
    folder = folder.resolve()
    for candidate in (folder, folder.parent):
        if (candidate / "recipe.yaml").is_file() and ((candidate / "adapter").is_dir() or
                                                       (candidate / "model").is_dir()):
            return candidate
    return None


def record_serve(event: str, *, server: str, name: str, path: str | None, base: str | None = None,
                 gate=None, home: Path | None = None) -> dict[str, Any]:
    """Record an adapter (or base model) loaded into, or unloaded from, a server.

    Args:
        event: ``serve_load`` or ``serve_unload``.
        server: an id of this server process (loads and unloads of one server share it).
        name: the name requests use; path: the adapter, model or run folder; base: the base it sits on.
        gate: the release gate's decision for the run served, if any.
        home: the run whose ledger records loads of folders that belong to no run (the server's target).
    """
    inputs: dict[str, dict] = {}
    run_dir = run_of(path)
    if event == "serve_load" and path:
        folder = Path(path).expanduser()
        if run_dir is not None and folder.resolve() == run_dir:
            inputs = weights_refs(run_dir)
        elif folder.is_dir():  # an adapter folder, a run's adapter/ or model/, a base or merged model
            inputs = folder_refs(folder, f"{folder.name}/")
    local = Path(path).expanduser() if path else None
    shown = str(local.resolve()) if local is not None and local.exists() else path  # a hub id stays as it is
    data = {"server": server, "name": name, "path": shown,
            "base": base, "run_dir": str(run_dir) if run_dir else None,
            "gate": gate.to_dict() if gate is not None else None}
    owner = run_dir or home
    ledger = ledger_for_run(owner) if owner is not None else open_ledger()
    return ledger.append(event, data, inputs=inputs)


class ServeAudit:
    """The release gate and the ledger for one server process: admit, then record loads and unloads.

    Args:
        no_gate: serve runs that fail their gate (each bypass is recorded).
        target: what the server was started on; its run's ledger records every load of this server.
    """

    def __init__(self, no_gate: bool = False, target: str | None = None):
        import os
        import socket
        import uuid

        self.no_gate = no_gate
        self.server = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.paths: dict[str, str | None] = {}  # served name -> path, for unload records
        self.home = run_of(target)

    def admit(self, path: str | None):
        """The gate decision for the run ``path`` belongs to (None for a plain model or adapter folder).

        Raises:
            GateError: the run fails its release gate and the server was not started with --no-gate.
        """
        run = run_of(path)
        return gate_for_release(run, self.no_gate, "serve") if run is not None else None

    def loaded(self, name: str, path: str | None, gate=None, base: str | None = None) -> None:
        self.paths[name] = path
        record_serve("serve_load", server=self.server, name=name, path=path, base=base, gate=gate, home=self.home)

    def unloaded(self, name: str) -> None:
        record_serve("serve_unload", server=self.server, name=name, path=self.paths.pop(name, None),
                     home=self.home)

    def stopped(self) -> None:
        """Record the unload of everything still loaded when the server stops."""
        for name in list(self.paths):
            self.unloaded(name)
