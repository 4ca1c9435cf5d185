"""The ``prepare`` stage: raw data files in, a redacted, deduplicated, leak-free dataset folder out.

    read -> detect format -> convert and validate -> clean -> length filter -> redact PII
         -> exact and near dedup -> sample -> split -> leakage check -> write
         (-> canaries: fake secrets planted in train records, see ayar.data.canary)

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
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from ayar.data.canary import canary_manifest, card_section, insert_canary, parse_template, plan_insertions
from ayar.data.card import PiiTally, Rejects, dedup_report, leakage_report, render_card, split_report, stats
from ayar.data.clean import LengthFilter, clean_record, empty_turn, special_text, token_counter
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
    record_texts,
    to_json,
)
from ayar.data.mix import card_lines, mix_out, mix_report
from ayar.data.prepare_config import PrepareSection, SourceConfig
from ayar.data.readers import Source, common_kind, iter_records, open_source, resolve_path
from ayar.data.redaction import Redaction
from ayar.data.split import SPLITS, assign_splits, resolve_leakage
from ayar.data.workspace import OUTPUTS, Table, Workspace, check_outputs
from ayar.errors import AyarError
from ayar.fsutil import check_distinct
from ayar.govern.manifest import describe_folder, file_record, utc_now, write_json_atomic
from ayar.govern.subject import SubjectCollector
from ayar.ui import console

PREPARE_MANIFEST_VERSION = 1
MAX_LISTED_ERRORS = 20
MAX_TOKENIZER_TEXTS = 20_000  # texts measured by `data inspect --tokenizer`
AUTO_WORKERS = 8  # most redaction processes `workers: 0` starts (each holds ~400 MiB)


def _check_outputs(sources: list[Source], out_dir: Path, section: PrepareSection, base_dir: Path) -> None:
    """Refuse an output (a dataset file, the manifest, the card, the PII vault) that is a source or another output."""
    for source in sources:
        if out_dir.resolve() == source.path.resolve():
            raise AyarError(f"prepare.output_dir: writing to {out_dir} would overwrite the source {source.path}; "
                            "choose another output_dir")
    def pii_path(key: str) -> Path | None:
        value = getattr(section.pii, key) if section.pii is not None else None
        return resolve_path(str(value), base_dir) if value is not None else None

    outputs: dict[str, Path | None] = {f"prepare.output_dir: {name}": out_dir / name
                                       for name in (*OUTPUTS, "manifest.json", "data_card.md")}
    outputs["prepare.pii.vault_path"] = pii_path("vault_path")
    inputs: dict[str, Path | None] = {f"source {s.name}": s.path for s in sources}
    inputs.update({f"prepare.pii.{k}": pii_path(k) for k in ("secret_file", "vault_public_key")})
    check_distinct(inputs, outputs)


def prepare(section: PrepareSection, base_dir: str | Path = ".", *, show_progress: bool = True,
            governance=None) -> dict[str, Any]:
    """Run the prepare stage; see the module docstring.

    The stage functions below run in order, each returning its result and its counts
    (the ``steps`` of the manifest): :func:`ingest` (read to redact, into the work file),
    :func:`plan_splits` (dedup, sample, split, leakage), :func:`plan_canaries`,
    :func:`write_splits`, then :func:`summarise`.

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
    check_outputs(sources, out_dir)
    _check_outputs(sources, out_dir, section, base_dir)
    kind = common_kind(sources)
    if section.canaries is not None and kind == "kto":
        raise AyarError("prepare.canaries: KTO records cannot carry canaries (their label decides whether the "
                        "model learns a reply or unlearns it); remove `canaries` or use preference pairs")
    run = Run(section, sources, kind, section.workers or min(os.cpu_count() or 1, AUTO_WORKERS), show_progress)
    length = LengthFilter(section.length, base_dir)
    pii = _resolved_pii(section, base_dir)
    redaction = Redaction(pii, run.workers)  # checks the secret before any reading
    subjects = SubjectCollector.from_pii(pii)  # keyed identifiers for `ayar audit subject`
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Workspace(out_dir)
    try:
        rejects = Rejects(work.files["rejects.jsonl"], sources)
        try:
            ingested = ingest(run, length, redaction, subjects, rejects, work.files["work.jsonl"])
        finally:
            redaction.close()
        work.files["work.jsonl"].flush()
        plan = plan_splits(run, ingested.table)
        canaries = plan_canaries(run, ingested.table, plan.assignment)
        written = write_splits(run, ingested.table, plan, canaries, work, rejects)
        subjects.finish(written.assignment, lambda i: run.where(ingested.table, i))
        summary = summarise(run, ingested, plan, canaries, written, rejects, redaction)
        summary["output_dir"] = str(out_dir)
        counts = {**summary["split"]["sizes"], "rejects": summary["rejects"]["total"]}
        summary["outputs"] = {name: {**work.close(name), "records": counts[name.removesuffix(".jsonl")]}
                              for name in OUTPUTS}
        work.files["data_card.md"].write(render_card(summary) + card_section(summary["canaries"])
                                         + "\n".join(card_lines(summary["mix"])))
        summary["outputs"]["data_card.md"] = work.close("data_card.md")
        work.commit()
    finally:
        work.cleanup()
    summary["subject_index"] = subjects.write(out_dir)
    write_json_atomic(out_dir / "manifest.json", summary)  # last: it describes the files above
    from ayar.govern.record import record_prepare

    record_prepare(summary, governance)
    return summary


def _resolved_pii(section: PrepareSection, base_dir: Path):
    """The ``pii`` settings with key and vault files, like every path in a recipe, relative to its folder."""
    pii = section.pii
    if pii is None:
        return None
    return pii.model_copy(update={k: resolve_path(str(v), base_dir) for k in ("secret_file", "vault_path",
                                                                              "vault_public_key")
                                  if (v := getattr(pii, k)) is not None})


Step = tuple[str, int]  # (what the records went through, how many are left): one line of the manifest's steps


@dataclass(frozen=True)
class Run:
    """What every stage reads: the settings and the opened sources (nothing here changes during a run)."""

    section: PrepareSection
    sources: list[Source]
    kind: str  # conversation, preference, kto or text: what every source holds
    workers: int
    show_progress: bool
    started: float = field(default_factory=time.perf_counter)
    created: str = field(default_factory=utc_now)

    def where(self, table: Table, i: int) -> str:
        """Location of the record on line ``i`` of the work file ("tickets.jsonl:12")."""
        return self.sources[table.source[i]].where(table.number[i])


class Item(NamedTuple):
    """One converted and cleaned record on its way to redaction (``Redaction`` reads ``item[0]``)."""

    record: Record
    source: int  # index into Run.sources
    group: str | None  # split.group_key value
    stratum: str | None  # split.stratify_key value
    origin: dict | None = None  # meta.synthetic of a record written by `ayar synth`, kept in the output


# ----------------------------------------------------------------------------- 1. read, validate, clean, redact


@dataclass
class Ingested:
    """What :func:`ingest` leaves: the per-record table, the PII tally and its counts."""

    table: Table
    tally: PiiTally
    read: Counter[int]  # records read per source index
    steps: list[Step]


@dataclass
class _Counts:
    read: Counter[int] = field(default_factory=Counter)
    total: int = 0
    valid: int = 0
    filtered: int = 0


def ingest(run: Run, length: LengthFilter, redaction: Redaction, subjects: SubjectCollector, rejects: Rejects,
           spill) -> Ingested:
    """Read every source, convert, validate, clean, length-filter and redact; spill survivors to ``spill``.

    Records go to the redaction in batches; only their keys stay in memory (:class:`Table`).

    Raises:
        AyarError: with ``on_error: fail``, every unusable record (nothing is written then).
    """
    section = run.section
    table, counts, errors = Table(), _Counts(), []
    tally = PiiTally(section.pii.report_examples if section.pii else 0)
    batch_size = section.pii.batch_size if section.pii else 512
    pending: list[Item] = []
    for s, source in enumerate(run.sources):
        for number, raw in iter_records(source.path, source.container):
            counts.read[s] += 1
            counts.total += 1
            item = _accept(run, length, rejects, errors, counts, s, number, raw)
            if item is not None and not errors:
                pending.append(item)
            if len(pending) >= batch_size:
                _store(run, table, tally, subjects, rejects, spill, redaction.submit(pending))
                pending = []
            _progress(run, counts.total, len(table))
    _store(run, table, tally, subjects, rejects, spill, redaction.submit(pending))
    _store(run, table, tally, subjects, rejects, spill, redaction.drain())
    if errors:
        more = len(errors) - MAX_LISTED_ERRORS
        raise AyarError(f"{len(errors)} unusable record(s); nothing was written (fix them, or set "
                        "prepare.on_error: skip to leave them out with their reasons):\n  "
                        + "\n  ".join(errors[:MAX_LISTED_ERRORS]) + (f"\n  ... and {more} more" if more > 0 else ""))
    steps = [("read", counts.total), ("converted and valid", counts.valid),
             ("cleaned, within length limits", counts.filtered), ("after PII redaction (drop_record)", len(table))]
    return Ingested(table, tally, counts.read, steps)


def _accept(run: Run, length: LengthFilter, rejects: Rejects, errors: list[str], counts: _Counts, s: int,
            number: int, raw: dict | RecordError) -> Item | None:
    """The converted, cleaned record with its group and stratum, or None (rejected, or an error listed)."""
    source, section = run.sources[s], run.section
    try:
        if isinstance(raw, RecordError):
            raise raw
        raw = apply_columns(raw, source.config.columns)
        record = convert(raw, source.format, source.name, number)
    except RecordError as exc:
        if section.on_error == "fail":
            errors.append(f"{source.where(number)}: {exc.detail}")
        else:
            rejects.add(s, number, "validate", exc.code, exc.detail)
        return None
    counts.valid += 1
    record = clean_record(record, section.clean)
    problem = empty_turn(record) or special_text(record, section.clean) or length.check(record)
    if problem is not None:
        rejects.add(s, number, "clean", problem.code, problem.detail)
        return None
    counts.filtered += 1
    meta = raw.get("meta")
    origin = meta.get("synthetic") if isinstance(meta, dict) and isinstance(meta.get("synthetic"), dict) else None
    return Item(record, s, _key_value(raw, section.split.group_key), _key_value(raw, section.split.stratify_key),
                origin)


def _store(run: Run, table: Table, tally: PiiTally, subjects: SubjectCollector, rejects: Rejects, spill,
           done: list) -> None:
    """Write redacted records to the work file and their keys to ``table``; reject dropped or broken ones."""
    texts = []
    for item, record, found in done:
        source = run.sources[item.source]
        tally.add_source(source.name, [f for f, _ in found])
        if record is None:
            kinds = ", ".join(sorted({f.entity_type for f, _ in found}))
            rejects.add(item.source, item.record.line, "pii", "pii_drop_record", f"holds {kinds} (operator drop_record)")
            continue
        out = to_json(record)
        if found:
            try:  # masking can make chosen and rejected the same text
                convert(out, OUTPUT_FORMAT[run.kind], record.source, record.line)
            except RecordError as exc:
                rejects.add(item.source, record.line, "pii", exc.code, f"after redaction: {exc.detail}")
                continue
            tally.add_examples(source.where(record.line), found)
        out["meta"] = {"source": source.name, source.unit: record.line,
                       **({"synthetic": item.origin} if item.origin is not None else {})}
        spill.write(json.dumps(out, ensure_ascii=False) + "\n")
        table.add(item.source, record.line, item.group, item.stratum,
                  tuple(f.entity_type for f, _ in found) if found else None, synthetic=item.origin is not None)
        subjects.add(item.record, item.group, found)
        texts.append(record_text(record))
    table.keys.extend(exact_key(text) for text in texts)
    table.sigs.extend(signatures(texts, run.section.dedup.num_perm, run.section.dedup.ngram))


def _progress(run: Run, total: int, redacted: int) -> None:
    if run.show_progress and total % 10_000 == 0:
        rate = total / max(time.perf_counter() - run.started, 1e-9)
        console.print(f"prepare: {total} records read, {redacted} redacted ({rate:.0f} records/s)")


# ----------------------------------------------------------------------------- 2. dedup, sample, split, leakage


@dataclass(frozen=True)
class Plan:
    """Where every record of the work file goes, decided on its keys alone."""

    removed: dict[int, tuple[int, str]]  # dedup: index -> (kept index, "exact" | "near")
    sampled_out: set[int]
    mixed_out: set[int]  # left out to reach prepare.synthetic_share
    kept_before_mix: list[int]
    assignment: dict[int, str]  # index -> split, for every record still in
    leakage: Any
    steps: list[Step]


def plan_splits(run: Run, table: Table) -> Plan:
    """Exact and near dedup, per-source sampling, the split, and leakage resolution across splits."""
    d, sp = run.section.dedup, run.section.split
    n = len(table)
    dedup, index = deduplicate(range(n), table.keys, table.sigs, exact=d.exact, near=d.near, threshold=d.threshold,
                               num_perm=d.num_perm)
    kept = [i for i in range(n) if i not in dedup.removed]
    sampled_out = _sample(run, table, kept)
    kept = [i for i in kept if i not in sampled_out]
    before_mix = kept
    mixed_out = mix_out(kept, table.synthetic, run.section.synthetic_share, sp.seed)
    kept = [i for i in kept if i not in mixed_out]
    assignment = assign_splits(kept, table.groups, table.strata, (sp.train, sp.val, sp.test), sp.seed)
    pairs = duplicate_pairs(kept, table.keys, table.sigs, threshold=d.threshold, num_perm=d.num_perm, index=index)
    leakage = resolve_leakage(pairs, assignment, table.groups, run.section.leakage.resolve)
    steps = [("after exact dedup", n - dedup.count("exact")),
             ("after near dedup", len(kept) + len(sampled_out) + len(mixed_out)),
             ("after sampling", len(before_mix)),
             *([("after the synthetic/human mix", len(kept))] if run.section.synthetic_share is not None else []),
             ("after leakage resolution", len(assignment))]
    return Plan(dedup.removed, sampled_out, mixed_out, before_mix, assignment, leakage, steps)


def _sample(run: Run, table: Table, kept: list[int]) -> set[int]:
    """Records left out by their source's ``sample_size`` (a seeded choice among the kept ones)."""
    out: set[int] = set()
    for s, source in enumerate(run.sources):
        size = source.config.sample_size
        members = [i for i in kept if table.source[i] == s] if size else []
        if size and len(members) > size:
            chosen = set(random.Random(f"{run.section.split.seed}:{s}").sample(members, size))
            out.update(i for i in members if i not in chosen)
    return out


# ----------------------------------------------------------------------------- 3. canaries


@dataclass(frozen=True)
class Canaries:
    """Which train records carry which canary (see :mod:`ayar.data.canary`), and the manifest's record of them."""

    carriers: dict[int, int]  # work-file index -> canary number
    sentences: list[str]
    manifest: dict[str, Any] | None


NO_CANARIES = Canaries({}, [], None)


def plan_canaries(run: Run, table: Table, assignment: dict[int, str]) -> Canaries:
    """Choose the carriers among train records of weight >= 1 and draw the secret values (seeded).

    Raises:
        AyarError: fewer such records than ``count * repeats``.
    """
    config = run.section.canaries
    if config is None:
        return NO_CANARIES
    template = parse_template(config.template)
    eligible = sorted(i for i, split in assignment.items()
                      if split == "train" and (run.sources[table.source[i]].config.weight or 1) >= 1)
    try:
        carriers = plan_insertions(eligible, config.count, config.repeats, config.seed)
    except ValueError as exc:
        raise AyarError(f"prepare.canaries: {exc}; lower count or repeats") from None
    values = template.sample(random.Random(f"canary-values:{config.seed}"), config.count)
    locations: list[list[str]] = [[] for _ in values]
    for i in sorted(carriers):
        locations[carriers[i]].append(run.where(table, i))
    return Canaries(carriers, [template.fill(v) for v in values],
                    canary_manifest(template, values, config.repeats, config.seed, locations))


def _plant(line: str, canaries: Canaries, n: int) -> str:
    record = insert_canary(json.loads(line), canaries.sentences[n])
    record["meta"]["canary"] = n
    return json.dumps(record, ensure_ascii=False) + "\n"


# ----------------------------------------------------------------------------- 4. write


@dataclass(frozen=True)
class Written:
    """What :func:`write_splits` wrote: records per split (weighted copies counted) and the final assignment."""

    sizes: dict[str, int]
    assignment: dict[int, str]  # the plan's, less the records a weight below 1 left out
    steps: list[Step]


def write_splits(run: Run, table: Table, plan: Plan, canaries: Canaries, work: Workspace,
                 rejects: Rejects) -> Written:
    """One pass over the work file: each record to its split (weighted, canaries planted) or to rejects."""
    sizes = dict.fromkeys(SPLITS, 0)
    rng = random.Random(run.section.split.seed)
    weighted_out: set[int] = set()
    with open(work.paths["work.jsonl"], encoding="utf-8") as spill:
        for i, line in enumerate(spill):
            split = plan.assignment.get(i)
            if split is None:
                _reject_removed(run, table, plan, rejects, i)
                continue
            copies = 1
            weight = run.sources[table.source[i]].config.weight
            if split == "train" and weight is not None:
                copies = int(weight) + (rng.random() < weight - int(weight))
                if copies == 0:
                    _reject(table, rejects, i, "weight", "weighted_out", f"left out by weight {weight:g}")
                    weighted_out.add(i)
            text = line * copies
            if i in canaries.carriers:  # the first copy carries the canary (carriers never have weight < 1)
                text = _plant(line, canaries, canaries.carriers[i]) + line * (copies - 1)
            work.files[f"{split}.jsonl"].write(text)
            sizes[split] += copies
    assignment = {i: split for i, split in plan.assignment.items() if i not in weighted_out}
    return Written(sizes, assignment, [("written (distinct records)", len(assignment))])


def _reject(table: Table, rejects: Rejects, i: int, stage: str, reason: str, detail: str, **extra: Any) -> None:
    rejects.add(table.source[i], table.number[i], stage, reason, detail, **extra)


def _reject_removed(run: Run, table: Table, plan: Plan, rejects: Rejects, i: int) -> None:
    """Reject a record the plan left out, saying why (dedup, sampling or leakage)."""
    if i in plan.removed:
        kept, how = plan.removed[i]
        where = run.where(table, kept)
        _reject(table, rejects, i, "dedup", f"{how}_duplicate", f"{how} duplicate of {where}", duplicate_of=where)
    elif i in plan.sampled_out:
        _reject(table, rejects, i, "sample", "sampled_out", "not drawn by the source's sample_size")
    elif i in plan.mixed_out:
        kind = "synthetic" if table.synthetic[i] else "human"
        _reject(table, rejects, i, "mix", "mixed_out", f"a {kind} record left out to reach "
                f"prepare.synthetic_share={run.section.synthetic_share:g}")
    elif i in plan.leakage.dropped:
        where = run.where(table, plan.leakage.dropped[i])
        _reject(table, rejects, i, "leakage", "leakage_dropped", f"duplicate of {where} in another split",
                duplicate_of=where)


# ----------------------------------------------------------------------------- 5. summary


def summarise(run: Run, ingested: Ingested, plan: Plan, canaries: Canaries, written: Written, rejects: Rejects,
              redaction: Redaction) -> dict[str, Any]:
    """The manifest (less ``output_dir`` and ``outputs``, which :func:`prepare` adds once the files are closed)."""
    table, tally, section = ingested.table, ingested.tally, run.section
    for i, split in written.assignment.items():
        tally.add_split(split, table.pii[i])
    seconds = time.perf_counter() - run.started
    total = ingested.steps[0][1]
    d = section.dedup
    method = f"MinHash LSH, {d.num_perm} permutations, word {d.ngram}-grams, Jaccard >= {d.threshold}"

    def where(i: int) -> str:
        return run.where(table, i)

    return {
        "ayar_prepare_version": PREPARE_MANIFEST_VERSION,
        "created_at": run.created,
        "kind": run.kind,
        "sources": [_source_summary(s, ingested.read[k], rejects, tally) for k, s in enumerate(run.sources)],
        "steps": [{"step": name, "records": count} for name, count in ingested.steps + plan.steps + written.steps],
        "rejects": {"total": sum(rejects.by_reason.values()), "by_reason": dict(rejects.by_reason.most_common())},
        "pii": tally.summary(section.pii, rejects.by_reason["pii_drop_record"], redaction.save_vault()),
        "dedup": dedup_report(plan.removed, where, method),
        "split": split_report(written.assignment, written.sizes, table.groups, table.strata, section.split,
                              redaction.redact_labels),
        "leakage": leakage_report(plan.leakage, section.leakage.resolve, where),
        "canaries": canaries.manifest,
        "mix": mix_report(section.synthetic_share, table.synthetic, plan.kept_before_mix, plan.mixed_out,
                          written.assignment),
        "settings": section.model_dump(mode="json"),
        "workers": run.workers,
        "seconds": round(seconds, 2),
        "records_per_second": round(total / seconds, 1) if seconds > 0 else None,
        "warnings": _warnings(run, table, written.sizes),
    }


def _source_summary(s: Source, read: int, rejects: Rejects, tally: PiiTally) -> dict[str, Any]:
    content = file_record(s.path) if s.path.is_file() else {"files": describe_folder(s.path)}
    return {"name": s.name, "path": str(s.path), "container": s.container, "format": s.format,
            "format_detected": s.detected, "records_read": read, "rejected": rejects.by_source[s.name], **content,
            "pii": dict(tally.by_source[s.name].most_common())}


def _warnings(run: Run, table: Table, sizes: dict[str, int]) -> list[str]:
    sp = run.section.split
    out = [f"{name}.jsonl is empty although its ratio is {getattr(sp, name)}: too few records or groups"
           for name in SPLITS if sizes[name] == 0 and getattr(sp, name) > 0]
    if run.section.pii is None:
        out.append("PII redaction is off (pii: null): the outputs may hold personal data")
    for key, values in (("group_key", table.groups), ("stratify_key", table.strata)):
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
        ``pii`` (count per entity type in the scanned records), ``duplicates`` (exact and near rates)
        and, with a tokenizer, ``tokenizer`` (its efficiency on the first records' texts, see
        :func:`ayar.tokenizer.report.measure`).

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
    tok_texts: list[str] = []
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
        if tokenizer and len(tok_texts) < MAX_TOKENIZER_TEXTS:
            tok_texts += [t for label, t in record_texts(record) if label != "label" and t.strip()]
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
                           "rate": round(len(dedup.removed) / len(keys), 4) if keys else 0.0},
            **({"tokenizer": _tokenizer_efficiency(tokenizer, tok_texts)} if tokenizer and tok_texts else {})}


def _tokenizer_efficiency(tokenizer: str, texts: list[str]) -> dict[str, Any]:
    """Fertility, characters per token and the most fragmented words (see :mod:`ayar.tokenizer.report`)."""
    from ayar.tokenizer.report import measure, open_tokenizer

    return measure(open_tokenizer(tokenizer), texts, name=tokenizer, top=10).to_dict()


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
