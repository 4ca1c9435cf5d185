"""The ``prepare`` stage: raw data files in, a redacted, deduplicated, leak-free dataset folder out.

    read -> detect format -> convert and validate -> clean -> length filter -> redact PII
         -> exact and near dedup -> sample -> split -> leakage check -> write
         (-> canaries: fake secrets planted in train records, see ayar.eval.canary)

Records stream through the first half in batches: each redacted record goes to a
hidden work file in the output folder, and only its duplicate keys, MinHash
signature, group and stratum values and PII counts stay in memory (a few KB a
record: 100k demo tickets peak under 1 GiB, so 250k fit easily in 24 GiB). The second half decides, on those
keys, which records go where, then a last pass over the work file writes the
splits. Nothing in the output folder is replaced until everything succeeded,
and every output is moved into place with ``os.replace``.

The folder receives ``train.jsonl``, ``val.jsonl``, ``test.jsonl`` (records in
:func:`~ayar.data.formats.to_json` form plus ``meta``: source and line),
``rejects.jsonl`` (every record left out, with its location and reason and
never its content), ``manifest.json`` and ``data_card.md``.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ayar.data.card import PiiTally, Rejects, dedup_report, leakage_report, render_card, split_report, stats
from ayar.data.clean import LengthFilter, clean_record, empty_turn, token_counter
from ayar.data.dedup import deduplicate, duplicate_pairs, exact_key, signatures
from ayar.data.formats import (
    CONVERTERS,
    KIND_OF_FORMAT,
    OUTPUT_FORMAT,
    Record,
    RecordError,
    apply_columns,
    convert,
    record_text,
    to_json,
)
from ayar.data.prepare_config import PrepareSection, SourceConfig
from ayar.data.readers import Source, common_kind, iter_records, open_source, resolve_path
from ayar.data.redaction import Redaction
from ayar.data.split import SPLITS, assign_splits, resolve_leakage
from ayar.errors import AyarError
from ayar.eval.canary import canary_manifest, card_section, insert_canary, parse_template, plan_insertions
from ayar.govern.manifest import describe_folder, file_record, utc_now, write_json_atomic
from ayar.govern.subject import SubjectCollector
from ayar.ui import console

PREPARE_MANIFEST_VERSION = 1
OUTPUTS = ("train.jsonl", "val.jsonl", "test.jsonl", "rejects.jsonl")
MAX_LISTED_ERRORS = 20
AUTO_WORKERS = 8  # most redaction processes `workers: 0` starts (each holds ~400 MiB)


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

    def __len__(self) -> int:
        return len(self.source)


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


def _check_outputs(sources: list[Source], out_dir: Path) -> None:
    targets = {(out_dir / name).resolve() for name in (*OUTPUTS, "manifest.json", "data_card.md")}
    for source in sources:
        if source.path.resolve() in targets or out_dir.resolve() == source.path.resolve():
            raise AyarError(f"prepare.output_dir: writing to {out_dir} would overwrite the source {source.path}; "
                            "choose another output_dir")


def prepare(section: PrepareSection, base_dir: str | Path = ".", *, show_progress: bool = True,
            governance=None) -> dict[str, Any]:
    """Run the prepare stage; see the module docstring.

    Args:
        section: the recipe's ``prepare`` section.
        base_dir: folder that relative source, tokenizer and output paths are resolved against.
        show_progress: print progress on the console (stderr).
        governance: the recipe's ``governance`` section (recorded in the audit ledger; None: defaults).

    Returns:
        The summary, also written as ``manifest.json``: sources with sha256, counts at every step,
        rejects by reason, PII, dedup, split and leakage figures, outputs with sha256, settings.

    Raises:
        AyarError: unreadable sources, sources of different kinds, or (with ``on_error: fail``) every
            unusable record listed by location; nothing is written then.
    """
    base_dir = Path(base_dir)
    out_dir = resolve_path(section.output_dir, base_dir)
    sources = [open_source(s, base_dir) for s in section.sources]
    _check_outputs(sources, out_dir)
    kind = common_kind(sources)
    if section.canaries is not None and kind == "kto":
        raise AyarError("prepare.canaries: KTO records cannot carry canaries (their label decides whether the "
                        "model learns a reply or unlearns it); remove `canaries` or use preference pairs")
    run = _Run(section, base_dir, sources, kind, show_progress)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Workspace(out_dir)
    try:
        summary = run.execute(work)
        summary["output_dir"] = str(out_dir)
        counts = {**summary["split"]["sizes"], "rejects": summary["rejects"]["total"]}
        summary["outputs"] = {name: {**work.close(name), "records": counts[name.removesuffix(".jsonl")]}
                              for name in OUTPUTS}
        work.files["data_card.md"].write(render_card(summary) + card_section(summary["canaries"]))
        summary["outputs"]["data_card.md"] = work.close("data_card.md")
        work.commit()
    finally:
        work.cleanup()
    summary["subject_index"] = run.subjects.write(out_dir)
    write_json_atomic(out_dir / "manifest.json", summary)  # last: it describes the files above
    from ayar.govern.record import record_prepare

    record_prepare(summary, governance)
    return summary


@dataclass
class _Plan:
    removed: dict[int, tuple[int, str]]  # dedup: index -> (kept index, "exact" | "near")
    sampled_out: set[int]
    assignment: dict[int, str]
    leakage: Any
    steps: list[tuple[str, int]]


class _Run:
    """State of one prepare run: the stages below share it."""

    def __init__(self, section: PrepareSection, base_dir: Path, sources: list[Source], kind: str,
                 show_progress: bool):
        self.section, self.sources, self.kind = section, sources, kind
        self.started, self.created = time.perf_counter(), utc_now()
        self.length = LengthFilter(section.length, base_dir)
        pii = section.pii
        if pii is not None:  # key and vault files, like every path in a recipe, are relative to its folder
            pii = pii.model_copy(update={k: resolve_path(str(v), base_dir) for k in ("secret_file", "vault_path")
                                         if (v := getattr(pii, k)) is not None})
        self.workers = section.workers or min(os.cpu_count() or 1, AUTO_WORKERS)
        self.redaction = Redaction(pii, self.workers)
        self.subjects = SubjectCollector.from_pii(pii)  # keyed identifiers for `ayar audit subject`
        self.table = Table()
        self.tally = PiiTally(section.pii.report_examples if section.pii else 0)
        self.read: Counter[int] = Counter()
        self.total = self.valid = self.filtered = 0
        self.errors: list[str] = []
        self.show_progress = show_progress
        self.canaries: dict[str, Any] | None = None  # the manifest's record of planted canaries
        self.canary_sentences: list[str] = []

    def execute(self, work: Workspace) -> dict[str, Any]:
        self.rejects = Rejects(work.files["rejects.jsonl"], self.sources)
        self.spill = work.files["work.jsonl"]
        try:
            self._ingest()
        finally:
            self.redaction.close()
        if self.errors:
            more = len(self.errors) - MAX_LISTED_ERRORS
            raise AyarError(f"{len(self.errors)} unusable record(s); nothing was written (fix them, or set "
                            "prepare.on_error: skip to leave them out with their reasons):\n  "
                            + "\n  ".join(self.errors[:MAX_LISTED_ERRORS]) + (f"\n  ... and {more} more" if more > 0
                                                                              else ""))
        self.spill.flush()
        plan = self._plan()
        sizes = self._write(work, plan)
        return self._summary(plan, sizes)

    # ------------------------------------------------------------------ read, validate, clean, redact

    def _ingest(self) -> None:
        batch_size = self.section.pii.batch_size if self.section.pii else 512
        pending: list[tuple[Record, int, str | None, str | None]] = []
        for s, source in enumerate(self.sources):
            for number, raw in iter_records(source.path, source.container):
                self.read[s] += 1
                self.total += 1
                item = self._accept(s, number, raw)
                if item is not None and not self.errors:
                    pending.append(item)
                if len(pending) >= batch_size:
                    self._store(self.redaction.submit(pending))
                    pending = []
                self._progress()
        self._store(self.redaction.submit(pending))
        self._store(self.redaction.drain())

    def _accept(self, s: int, number: int, raw: dict | RecordError):
        """The converted, cleaned record with its group and stratum, or None (rejected)."""
        source = self.sources[s]
        try:
            if isinstance(raw, RecordError):
                raise raw
            raw = apply_columns(raw, source.config.columns)
            record = convert(raw, source.format, source.name, number)
        except RecordError as exc:
            if self.section.on_error == "fail":
                self.errors.append(f"{source.where(number)}: {exc.detail}")
            else:
                self.rejects.add(s, number, "validate", exc.code, exc.detail)
            return None
        self.valid += 1
        record = clean_record(record, self.section.clean)
        problem = empty_turn(record) or self.length.check(record)
        if problem is not None:
            self.rejects.add(s, number, "clean", problem.code, problem.detail)
            return None
        self.filtered += 1
        split = self.section.split
        return record, s, _key_value(raw, split.group_key), _key_value(raw, split.stratify_key)

    def _store(self, done: list) -> None:
        texts = []
        for (original, s, group, stratum), record, found in done:
            source = self.sources[s]
            self.tally.add_source(source.name, [f for f, _ in found])
            if record is None:
                kinds = ", ".join(sorted({f.entity_type for f, _ in found}))
                self.rejects.add(s, original.line, "pii", "pii_drop_record", f"holds {kinds} (operator drop_record)")
                continue
            out = to_json(record)
            if found:
                try:  # masking can make chosen and rejected the same text
                    convert(out, OUTPUT_FORMAT[self.kind], record.source, record.line)
                except RecordError as exc:
                    self.rejects.add(s, record.line, "pii", exc.code, f"after redaction: {exc.detail}")
                    continue
                self.tally.add_examples(source.where(record.line), found)
            out["meta"] = {"source": source.name, source.unit: record.line}
            self.spill.write(json.dumps(out, ensure_ascii=False) + "\n")
            t = self.table
            t.source.append(s), t.number.append(record.line), t.groups.append(group), t.strata.append(stratum)
            t.pii.append(tuple(f.entity_type for f, _ in found) if found else None)
            self.subjects.add(original, group, found)
            texts.append(record_text(record))
        self.table.keys.extend(exact_key(text) for text in texts)
        self.table.sigs.extend(signatures(texts, self.section.dedup.num_perm, self.section.dedup.ngram))

    def _progress(self) -> None:
        if self.show_progress and self.total % 10_000 == 0:
            rate = self.total / max(time.perf_counter() - self.started, 1e-9)
            console.print(f"prepare: {self.total} records read, {len(self.table)} redacted ({rate:.0f} records/s)")

    # ------------------------------------------------------------------ dedup, sample, split, leakage

    def _plan(self) -> _Plan:
        t, d, sp = self.table, self.section.dedup, self.section.split
        n = len(t)
        dedup, index = deduplicate(range(n), t.keys, t.sigs, exact=d.exact, near=d.near, threshold=d.threshold,
                                   num_perm=d.num_perm)
        kept = [i for i in range(n) if i not in dedup.removed]
        sampled_out = self._sample(kept)
        kept = [i for i in kept if i not in sampled_out]
        assignment = assign_splits(kept, t.groups, t.strata, (sp.train, sp.val, sp.test), sp.seed)
        pairs = duplicate_pairs(kept, t.keys, t.sigs, threshold=d.threshold, num_perm=d.num_perm, index=index)
        leakage = resolve_leakage(pairs, assignment, t.groups, self.section.leakage.resolve)
        steps = [("read", self.total), ("converted and valid", self.valid),
                 ("cleaned, within length limits", self.filtered), ("after PII redaction (drop_record)", n),
                 ("after exact dedup", n - dedup.count("exact")), ("after near dedup", len(kept) + len(sampled_out)),
                 ("after sampling", len(kept)), ("after leakage resolution", len(assignment))]
        return _Plan(dedup.removed, sampled_out, assignment, leakage, steps)

    def _sample(self, kept: list[int]) -> set[int]:
        out: set[int] = set()
        for s, source in enumerate(self.sources):
            size = source.config.sample_size
            members = [i for i in kept if self.table.source[i] == s] if size else []
            if size and len(members) > size:
                chosen = set(random.Random(f"{self.section.split.seed}:{s}").sample(members, size))
                out.update(i for i in members if i not in chosen)
        return out

    # ------------------------------------------------------------------ write

    def _write(self, work: Workspace, plan: _Plan) -> dict[str, int]:
        sizes = dict.fromkeys(SPLITS, 0)
        rng = random.Random(self.section.split.seed)
        carriers = self._plan_canaries(plan)
        with open(work.paths["work.jsonl"], encoding="utf-8") as spill:
            for i, line in enumerate(spill):
                split = plan.assignment.get(i)
                if split is None:
                    self._reject_removed(i, plan)
                    continue
                copies = 1
                weight = self.sources[self.table.source[i]].config.weight
                if split == "train" and weight is not None:
                    copies = int(weight) + (rng.random() < weight - int(weight))
                    if copies == 0:
                        self._reject(i, "weight", "weighted_out", f"left out by weight {weight:g}")
                        del plan.assignment[i]
                text = line * copies
                if i in carriers:  # the first copy carries the canary (carriers never have weight < 1)
                    text = self._plant(line, carriers[i]) + line * (copies - 1)
                work.files[f"{split}.jsonl"].write(text)
                sizes[split] += copies
        plan.steps.append(("written (distinct records)", len(plan.assignment)))
        return sizes

    def _plan_canaries(self, plan: _Plan) -> dict[int, int]:
        """Which train records carry which canary (see ayar.eval.canary); records them in ``self.canaries``."""
        config = self.section.canaries
        if config is None:
            return {}
        template = parse_template(config.template)
        eligible = sorted(i for i, split in plan.assignment.items()
                          if split == "train" and (self.sources[self.table.source[i]].config.weight or 1) >= 1)
        try:
            carriers = plan_insertions(eligible, config.count, config.repeats, config.seed)
        except ValueError as exc:
            raise AyarError(f"prepare.canaries: {exc}; lower count or repeats") from None
        values = template.sample(random.Random(f"canary-values:{config.seed}"), config.count)
        locations: list[list[str]] = [[] for _ in values]
        for i in sorted(carriers):
            locations[carriers[i]].append(self._where(i))
        self.canary_sentences = [template.fill(v) for v in values]
        self.canaries = canary_manifest(template, values, config.repeats, config.seed, locations)
        return carriers

    def _plant(self, line: str, n: int) -> str:
        record = insert_canary(json.loads(line), self.canary_sentences[n])
        record["meta"]["canary"] = n
        return json.dumps(record, ensure_ascii=False) + "\n"

    def _reject(self, i: int, stage: str, reason: str, detail: str, **extra: Any) -> None:
        self.rejects.add(self.table.source[i], self.table.number[i], stage, reason, detail, **extra)

    def _reject_removed(self, i: int, plan: _Plan) -> None:
        if i in plan.removed:
            kept, how = plan.removed[i]
            where = self._where(kept)
            self._reject(i, "dedup", f"{how}_duplicate", f"{how} duplicate of {where}", duplicate_of=where)
        elif i in plan.sampled_out:
            self._reject(i, "sample", "sampled_out", "not drawn by the source's sample_size")
        elif i in plan.leakage.dropped:
            where = self._where(plan.leakage.dropped[i])
            self._reject(i, "leakage", "leakage_dropped", f"duplicate of {where} in another split",
                         duplicate_of=where)

    def _where(self, i: int) -> str:
        return self.sources[self.table.source[i]].where(self.table.number[i])

    def _method(self) -> str:
        d = self.section.dedup
        return f"MinHash LSH, {d.num_perm} permutations, word {d.ngram}-grams, Jaccard >= {d.threshold}"

    # ------------------------------------------------------------------ summary

    def _summary(self, plan: _Plan, sizes: dict[str, int]) -> dict[str, Any]:
        t, section = self.table, self.section
        for i, split in plan.assignment.items():
            self.tally.add_split(split, t.pii[i])
        seconds = time.perf_counter() - self.started
        self.subjects.finish(plan.assignment, self._where)
        return {
            "ayar_prepare_version": PREPARE_MANIFEST_VERSION,
            "created_at": self.created,
            "kind": self.kind,
            "sources": [self._source_summary(k, s) for k, s in enumerate(self.sources)],
            "steps": [{"step": name, "records": count} for name, count in plan.steps],
            "rejects": {"total": sum(self.rejects.by_reason.values()),
                        "by_reason": dict(self.rejects.by_reason.most_common())},
            "pii": self.tally.summary(section.pii, self.rejects.by_reason["pii_drop_record"],
                                      self.redaction.save_vault()),
            "dedup": dedup_report(plan.removed, self._where, self._method()),
            "split": split_report(plan.assignment, sizes, t.groups, t.strata, section.split,
                                  self.redaction.redact_labels),
            "leakage": leakage_report(plan.leakage, section.leakage.resolve, self._where),
            "canaries": self.canaries,
            "settings": section.model_dump(mode="json"),
            "workers": self.workers,
            "seconds": round(seconds, 2),
            "records_per_second": round(self.total / seconds, 1) if seconds > 0 else None,
            "warnings": self._warnings(sizes),
        }

    def _source_summary(self, k: int, s: Source) -> dict[str, Any]:
        content = file_record(s.path) if s.path.is_file() else {"files": describe_folder(s.path)}
        return {"name": s.name, "path": str(s.path), "container": s.container, "format": s.format,
                "format_detected": s.detected, "records_read": self.read[k],
                "rejected": self.rejects.by_source[s.name], **content,
                "pii": dict(self.tally.by_source[s.name].most_common())}

    def _warnings(self, sizes: dict[str, int]) -> list[str]:
        sp, t = self.section.split, self.table
        out = [f"{name}.jsonl is empty although its ratio is {getattr(sp, name)}: too few records or groups"
               for name in SPLITS if sizes[name] == 0 and getattr(sp, name) > 0]
        if self.section.pii is None:
            out.append("PII redaction is off (pii: null): the outputs may hold personal data")
        for key, values in (("group_key", t.groups), ("stratify_key", t.strata)):
            missing = sum(v is None for v in values) if getattr(sp, key) else 0
            if missing:
                out.append(f"{missing} records have no `{getattr(sp, key)}` (split.{key})")
        return out


def _key_value(raw: dict[str, Any], key: str | None) -> str | None:
    if key is None or raw.get(key) in (None, ""):
        return None
    value = raw[key]
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)


# ----------------------------------------------------------------------------- inspect


def inspect_file(path: str | Path, tokenizer: str | None = None, *, format: str = "auto",
                 columns: dict[str, str] | None = None, pii_records: int = 1000,
                 threshold: float = 0.8) -> dict[str, Any]:
    """Describe a data file without writing anything.

    Args:
        path: a data file or save_to_disk folder (any container ``prepare`` reads).
        tokenizer: a local tokenizer folder: lengths in tokens instead of characters.
        format, columns: as in a prepare source (default: detect the format).
        pii_records: how many valid records (the first ones) are scanned for personal data.
        threshold: Jaccard similarity for near-duplicates.

    Returns:
        ``container``, ``format``, ``kind``, ``records``, ``valid``, ``invalid`` (count per reason),
        ``problems`` (the first ones, by location), ``length`` (unit and statistics),
        ``pii`` (count per entity type in the scanned records) and ``duplicates`` (exact and near rates).

    Raises:
        DataError: the file cannot be read or its format cannot be told.
    """
    if format not in ("auto", *CONVERTERS):
        raise AyarError(f"--format: {format!r} is not one of auto, {', '.join(CONVERTERS)}")
    source = open_source(SourceConfig(path=str(Path(path).resolve()), format=format, columns=columns or {}),
                         Path.cwd())
    measure = token_counter(tokenizer) if tokenizer else len
    invalid: Counter[str] = Counter()
    problems, lengths, keys, sigs, scan, texts = [], [], [], [], [], []
    records = 0
    for number, raw in iter_records(source.path, source.container):
        records += 1
        try:
            if isinstance(raw, RecordError):
                raise raw
            record = convert(apply_columns(raw, source.config.columns), source.format, source.name, number)
        except RecordError as exc:
            invalid[exc.code] += 1
            if len(problems) < MAX_LISTED_ERRORS:
                problems.append(f"{source.where(number)}: {exc.detail}")
            continue
        text = record_text(record)
        lengths.append(measure(text))
        keys.append(exact_key(text))
        texts.append(text)
        if len(texts) >= 1024:
            sigs += signatures(texts, 128, 3)
            texts = []
        if len(scan) < pii_records:
            scan.append(to_json(record))
    sigs += signatures(texts, 128, 3)
    dedup, _ = deduplicate(range(len(keys)), keys, sigs, exact=True, near=True, threshold=threshold, num_perm=128)
    return {"path": str(source.path), "container": source.container, "format": source.format,
            "kind": KIND_OF_FORMAT[source.format], "records": records, "valid": len(keys),
            "invalid": dict(invalid.most_common()), "problems": problems,
            "length": {"unit": "tokens" if tokenizer else "chars", **(stats(lengths) or {})},
            "pii": _scan_pii(scan),
            "duplicates": {"exact": dedup.count("exact"), "near": dedup.count("near"),
                           "rate": round(len(dedup.removed) / len(keys), 4) if keys else 0.0}}


def _scan_pii(records: list[dict]) -> dict[str, Any]:
    from ayar.data.pii import Redactor

    found: Counter[str] = Counter()
    with_pii = 0
    redactor = Redactor()
    for start in range(0, len(records), 256):
        for result in redactor.redact_records(records[start:start + 256]):
            found.update(f.entity_type for f in result.findings)
            with_pii += bool(result.findings)
    return {"records_scanned": len(records), "records_with_pii": with_pii, "by_entity": dict(found.most_common())}
