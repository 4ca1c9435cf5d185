"""Lineage over the audit ledger: from any artefact back to its source files and base model, and forward
to the evaluations, exports and servers that used it.

Entries are linked through content: an entry that *read* a file with sha256 h follows
the entry that *wrote* a file with sha256 h, wherever either file lies now. Only
content that identifies an artefact links — data and weight files (``.jsonl``,
``.safetensors``, ``.gguf``, ...) — because configs and tokenizer files are shared
by every run on the same base and would tie unrelated runs together (the empty
file likewise).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ayar.errors import AyarError

LINK_SUFFIXES = (".safetensors", ".gguf", ".jsonl", ".parquet", ".arrow", ".bin", ".csv", ".tsv")
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
_HEX = re.compile(r"^[0-9a-f]{8,64}$")


def links(refs: dict[str, dict] | None) -> set[str]:
    """The sha256 of the refs that identify an artefact (see the module docstring)."""
    return {r["sha256"] for label, r in (refs or {}).items()
            if isinstance(r, dict) and r.get("sha256") and r["sha256"] != EMPTY_SHA256
            and str(r.get("path") or label).endswith(LINK_SUFFIXES)}


def forward(entries: list[dict[str, Any]], hashes: Iterable[str]) -> list[dict[str, Any]]:
    """Entries that read any of ``hashes``, and transitively those that read what they wrote, in ledger order."""
    frontier, seen_hashes, reached = set(hashes), set(), {}
    while frontier:
        seen_hashes |= frontier
        new: set[str] = set()
        for entry in entries:
            if entry["seq"] not in reached and links(entry.get("inputs")) & frontier:
                reached[entry["seq"]] = entry
                new |= links(entry.get("outputs"))
        frontier = new - seen_hashes
    return [reached[k] for k in sorted(reached)]


def backward(entries: list[dict[str, Any]], start: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``start`` and every entry that wrote something they (transitively) read, newest first."""
    reached = {e["seq"]: e for e in start}
    frontier = [h for e in start for h in links(e.get("inputs"))]
    seen: set[str] = set()
    while frontier:
        h = frontier.pop()
        if h in seen:
            continue
        seen.add(h)
        for entry in entries:  # the latest writer of h before the reader is what it read; keep all
            if h in links(entry.get("outputs")) and entry["seq"] not in reached:
                reached[entry["seq"]] = entry
                frontier += list(links(entry.get("inputs")))
    return [reached[k] for k in sorted(reached, reverse=True)]


# ----------------------------------------------------------------------------- targets


def target_entries(entries: list[dict[str, Any]], target: str) -> tuple[list[dict[str, Any]], str]:
    """The entries that produced ``target`` (a run folder, an export folder, a file, or a sha256 or its prefix).

    Returns:
        (entries, a description of the target).

    Raises:
        AyarError: the target is neither an existing path nor a hash, or no entry produced it.
    """
    from ayar.govern.manifest import list_files, sha256_file
    from ayar.govern.record import run_of

    path = Path(target).expanduser()
    if _HEX.match(target.lower()) and not path.exists():
        prefix = target.lower()
        found = [e for e in entries if any(r.get("sha256", "").startswith(prefix)
                                           for r in (e.get("outputs") or {}).values())]
        what = f"sha256 {prefix}"
    elif path.is_file():
        digest = sha256_file(path)
        found = [e for e in entries if digest in {r.get("sha256") for r in (e.get("outputs") or {}).values()}]
        what = f"{path.resolve()} (sha256 {digest[:16]})"
    elif path.is_dir():
        run = run_of(path)
        if run is not None and run == path.resolve():
            found = [e for e in entries if e.get("event") == "train" and (e.get("data") or {}).get("run_dir")
                     == str(run)]
            what = f"run {run}"
        else:
            digests = {sha256_file(path / rel) for rel in list_files(path) if rel.endswith(LINK_SUFFIXES)}
            found = [e for e in entries if links(e.get("outputs")) & digests] or [
                e for e in entries if (e.get("data") or {}).get("path") == str(path.resolve())]  # e.g. vllm files
            what = f"{path.resolve()}"
    else:
        raise AyarError(f"{target}: neither a file, a folder nor a sha256; pass a run folder, an export folder, "
                        "a GGUF file or its hash")
    if not found:
        raise AyarError(f"{what}: no ledger entry produced it (was it made before the ledger existed, or recorded "
                        "in another ledger? see --ledger)")
    return found[-1:] if path.is_dir() and found[-1].get("event") == "train" else found, what


def lineage(entries: list[dict[str, Any]], target: str) -> dict[str, Any]:
    """The full chain of ``target``: producing entries, upstream entries and their source files, downstream."""
    produced, what = target_entries(entries, target)
    upstream = backward(entries, produced)
    written = {h for e in upstream for h in links(e.get("outputs"))}
    sources = [{"entry": e["seq"], "label": label, "path": r.get("path"), "sha256": r.get("sha256")}
               for e in upstream for label, r in (e.get("inputs") or {}).items()
               if r.get("sha256") not in written and not label.startswith(("base:", "init_adapter:"))
               and e.get("event") in ("prepare", "train", "derive", "synth", "synth_pairs")]
    hashes = {h for e in produced for h in links(e.get("outputs"))}
    downstream = [e for e in forward(entries, hashes) if e["seq"] not in {p["seq"] for p in produced}]
    return {"target": what, "produced_by": [e["seq"] for e in produced],
            "upstream": [summary(e) for e in upstream], "sources": sources,
            "downstream": [summary(e) for e in downstream]}


# ----------------------------------------------------------------------------- rendering


def summary(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry in a few fields: seq, time, event and a one-line description."""
    return {"entry": entry["seq"], "time": entry.get("time"), "event": entry.get("event"),
            "hash": entry.get("hash"), "what": describe(entry)}


def describe(entry: dict[str, Any]) -> str:
    """One line saying what an entry recorded."""
    d, event = entry.get("data") or {}, entry.get("event")
    if event == "prepare":
        pii = ", ".join(f"{k} {v}" for k, v in (d.get("pii") or {}).get("by_entity", {}).items()) or "none"
        sizes = d.get("split_sizes") or {}
        return (f"prepared {d.get('output_dir')} ({d.get('kind')}): train {sizes.get('train')}, val {sizes.get('val')},"
                f" test {sizes.get('test')}; redacted: {pii}; duplicates removed: "
                f"{(d.get('dedup') or {}).get('exact_removed')} exact, {(d.get('dedup') or {}).get('near_removed')} near")
    if event == "train":
        base = d.get("base_model") or {}
        resumed = f", resumed from {d['resumed_from']}" if d.get("resumed_from") else ""
        return (f"trained {d.get('run_dir')}: {d.get('method')} / {d.get('adapter')} on base "
                f"{base.get('path') or base.get('id')}, {d.get('started_at')} - {d.get('ended_at')}{resumed}")
    if event == "eval":
        gate = (d.get("gate") or {}).get("status")
        metrics = "; ".join(f"{m['name']} {_num(m.get('tuned'))} (base {_num(m.get('base'))})"
                            for m in d.get("metrics", [])[:4])
        return f"evaluated {d.get('run_dir')}: {metrics or 'preference pairs'}; gate {gate}"
    if event == "export":
        return (f"exported {d.get('format')} to {d.get('path')} ({'verified' if d.get('verified') else 'not verified'}"
                f"; gate {(d.get('gate') or {}).get('status')})")
    if event in ("serve_load", "serve_unload"):
        verb = "loaded into" if event == "serve_load" else "unloaded from"
        return f"{d.get('name')} ({d.get('path')}) {verb} server {d.get('server')}"
    if event == "derive":
        return (f"derived {', '.join(Path(r['path']).name for r in (entry.get('outputs') or {}).values())} from "
                f"{', '.join(Path(r['path']).name for r in (entry.get('inputs') or {}).values())}: {d.get('how')}")
    if event in ("synth", "synth_pairs"):
        teacher = d.get("teacher") or {}
        made = (f"{d.get('records')} {d.get('task')} records from teacher {teacher.get('model')} "
                f"({teacher.get('endpoint')})" if event == "synth" else
                f"{d.get('pairs')} preference pairs from {d.get('prompts')} prompts (sampler {d.get('sampler')}, "
                f"scorer {d.get('scorer')})")
        return f"synthesized {made}; {(d.get('rejects') or {}).get('total')} rejected"
    if event == "gate_bypassed":
        return f"release gate bypassed (--no-gate) for {d.get('stage')} of {d.get('run_dir')}"
    if event == "external_call":
        return (f"{d.get('requests')} requests to {d.get('destination')} ({d.get('model')}): "
                f"{'sent' if d.get('sent') else 'refused'}; personal data found: {d.get('pii_found') or 'none'}")
    return f"{event}: {', '.join(f'{k}={v}' for k, v in list(d.items())[:4])}"


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else "-"


def render_lineage(result: dict[str, Any]) -> str:
    """The lineage as text."""
    lines = [f"lineage of {result['target']} (ledger entries {', '.join(map(str, result['produced_by']))})",
             "upstream (newest first):"]
    lines += [f"  [{e['entry']}] {e['time']} {e['what']}" for e in result["upstream"]]
    lines.append("source files:")
    lines += [f"  {s['label']}: {s['path']} (sha256 {s['sha256'][:16]}, entry {s['entry']})" for s in result["sources"]]
    lines.append("downstream:" if result["downstream"] else "downstream: nothing recorded yet")
    lines += [f"  [{e['entry']}] {e['time']} {e['what']}" for e in result["downstream"]]
    return "\n".join(lines)
