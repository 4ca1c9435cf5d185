"""The data card (``data_card.md``) and the figures behind it, for a data-protection officer.

The card answers, from the prepare summary (the same content as
``manifest.json``): which files went in (by sha256), how many records survived
each step and why the others were left out, which personal data was found and
what was done with it (per entity type, per split and per source, with a few
*redacted* examples), which duplicates were removed, how the split was made and
whether any record leaks across splits. It never quotes an original value.

:class:`Rejects` writes ``rejects.jsonl`` (location and reason of every record left
out); :class:`PiiTally` and the ``*_report`` functions build the summary sections.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import IO, Any

import yaml

SPLITS = ("train", "val", "test")
SNIPPET_CONTEXT = 40  # characters kept on each side of a replacement in examples
LISTED_CLUSTERS = 20  # in the card; the manifest lists up to MAX_CLUSTERS
MAX_CLUSTERS = 100
MAX_STRATA = 20

# Reason code (rejects.jsonl) -> what it means, for the card.
REASONS = {
    "not_utf8": "the line or row is not valid UTF-8",
    "not_json": "the line is not valid JSON",
    "not_object": "the JSON value is not an object",
    "bad_row": "the CSV/TSV row has the wrong number of cells",
    "missing_field": "a field the format needs is missing",
    "wrong_type": "a field has the wrong type",
    "bad_message": "a message lacks a role or content, or has an unknown role",
    "role_order": "turns are not system?, user, assistant, user, ... in order",
    "no_assistant_turn": "the conversation does not end with an assistant turn",
    "empty_assistant_turn": "an assistant turn is empty",
    "empty_turn": "a turn is empty after cleaning",
    "empty_text": "a text field is empty",
    "identical_pair": "chosen and rejected are the same text",
    "bad_label": "the KTO label is not true or false",
    "too_short": "shorter than length.min",
    "too_long": "longer than length.max",
    "pii_drop_record": "holds personal data whose operator is drop_record",
    "exact_duplicate": "the same text as an earlier record",
    "near_duplicate": "nearly the same text as an earlier record",
    "sampled_out": "not drawn by the source's sample_size",
    "mixed_out": "left out to reach prepare.synthetic_share (synthetic vs human records)",
    "weighted_out": "left out of train by a source weight below 1",
    "leakage_dropped": "a duplicate of a record in another split (leakage.resolve: drop)",
}


class Rejects:
    """Writes rejects.jsonl rows (location, stage, reason; never content) and counts them."""

    def __init__(self, fh: IO[str], sources: list):
        self._fh, self._sources = fh, sources
        self.by_reason: Counter[str] = Counter()
        self.by_source: Counter[str] = Counter()

    def add(self, s: int, number: int | None, stage: str, reason: str, detail: str, **extra: Any) -> None:
        source = self._sources[s]
        row = {"source": source.name, source.unit: number, "stage": stage, "reason": reason, "detail": detail,
               **extra}
        self._fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.by_reason[reason] += 1
        self.by_source[source.name] += 1


def stats(values: list[float]) -> dict[str, float] | None:
    """min, mean, median, 95th percentile and max of ``values`` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return {"min": ordered[0], "mean": round(statistics.fmean(ordered), 1), "median": statistics.median(ordered),
            "p95": p95, "max": ordered[-1]}


class PiiTally:
    """Counts of redacted values per entity type, per source and per split, and redacted examples."""

    def __init__(self, max_examples: int):
        self.by_source: dict[str, Counter[str]] = defaultdict(Counter)
        self.by_split: dict[str, Counter[str]] = {name: Counter() for name in SPLITS}
        self.records_with_pii = 0
        self.examples: list[dict[str, Any]] = []
        self._max_examples = max_examples
        self._example_types: set[str] = set()

    def add_source(self, source: str, findings: list) -> None:
        """Count the findings of one record of ``source`` (before dedup and split)."""
        self.by_source[source].update(f.entity_type for f in findings)
        self.records_with_pii += bool(findings)

    def add_split(self, split: str, entity_types: tuple[str, ...] | None) -> None:
        """Count the values redacted in one record written to ``split``."""
        if entity_types:
            self.by_split[split].update(entity_types)

    def add_examples(self, where: str, found: list[tuple[Any, str]]) -> None:
        """Keep snippets of the *redacted* text around replacements, one entity type at a time first.

        Args:
            where: the record's location ("tickets.jsonl:12").
            found: ``(finding, redacted text the finding is in)`` pairs.
        """
        for finding, text in found:
            if len(self.examples) >= self._max_examples:
                return
            if finding.entity_type in self._example_types:
                continue
            start, end = max(0, finding.output_start - SNIPPET_CONTEXT), finding.output_end + SNIPPET_CONTEXT
            snippet = ("…" if start else "") + " ".join(text[start:end].split()) + ("…" if end < len(text) else "")
            self._example_types.add(finding.entity_type)
            self.examples.append({"at": where, "field": finding.field, "entity_type": finding.entity_type,
                                  "snippet": snippet})

    def summary(self, config, records_dropped: int, vault_entries: int) -> dict[str, Any]:
        total: Counter[str] = Counter()
        for counts in self.by_source.values():
            total.update(counts)
        return {"enabled": config is not None,
                "operators": {e: config.operator_for(e) for e in config.entities} if config else {},
                "by_entity": dict(total.most_common()),
                "by_source": {name: dict(c.most_common()) for name, c in self.by_source.items()},
                "by_split": {name: dict(c.most_common()) for name, c in self.by_split.items()},
                "records_with_pii": self.records_with_pii, "records_dropped": records_dropped,
                "vault_entries": vault_entries, "examples": self.examples}


# ----------------------------------------------------------------------------- summary sections

Where = Callable[[int], str]  # record index -> "source:line"


def dedup_report(removed: dict[int, tuple[int, str]], where: Where, method: str) -> dict[str, Any]:
    """Counts and the first clusters of removed duplicates (``removed[i] = (kept index, how)``)."""
    clusters: dict[int, list[int]] = {}
    for i, (kept, _) in sorted(removed.items()):
        clusters.setdefault(kept, []).append(i)
    listed = [{"kept": where(k), "removed": [{"at": where(i), "how": removed[i][1]} for i in members]}
              for k, members in list(clusters.items())[:MAX_CLUSTERS]]
    hows = Counter(how for _, how in removed.values())
    return {"exact_removed": hows["exact"], "near_removed": hows["near"], "clusters": len(clusters),
            "listed_clusters": listed, "method": method}


def split_report(assignment: dict[int, str], sizes: dict[str, int], groups: Sequence[str | None],
                 strata: Sequence[str | None], config, redact: Callable[[list[str]], dict[str, str]]
                 ) -> dict[str, Any]:
    """Split sizes (written and distinct), groups per split, and the largest strata per split.

    ``redact`` maps stratum labels to their redacted form: a label is data too.
    """
    unique = Counter(assignment.values())
    per_group: dict[str, set] = {name: set() for name in SPLITS}
    per_stratum: dict[str, Counter] = {}
    for i, split in assignment.items():
        per_group[split].add(groups[i] if groups[i] is not None else ("record", i))
        per_stratum.setdefault(str(strata[i]), Counter())[split] += 1
    largest = sorted(per_stratum, key=lambda k: -sum(per_stratum[k].values()))[:MAX_STRATA]
    labels = redact(largest) if config.stratify_key else {}
    return {"ratios": {"train": config.train, "val": config.val, "test": config.test}, "seed": config.seed,
            "group_key": config.group_key, "stratify_key": config.stratify_key,
            "sizes": sizes, "unique_records": {name: unique.get(name, 0) for name in SPLITS},
            "groups": {name: len(g) for name, g in per_group.items()},
            "records_without_group": sum(1 for i in assignment if groups[i] is None) if config.group_key else None,
            "strata": {labels[k]: {name: per_stratum[k].get(name, 0) for name in SPLITS} for k in labels} or None}


def leakage_report(result, resolve: str, where: Where) -> dict[str, Any]:
    """Cross-split pairs found, and how many records were moved or dropped."""
    return {"pairs_found": len(result.found), "resolve": resolve, "moved": len(result.moved),
            "dropped": len(result.dropped), "remaining": result.remaining,
            "examples": [{"a": where(i), "b": where(j)} for i, j in result.found[:20]]}


# ----------------------------------------------------------------------------- rendering


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _overview(s: dict[str, Any]) -> list[str]:
    sizes, pii, dedup, leak = s["split"]["sizes"], s["pii"], s["dedup"], s["leakage"]
    read = s["steps"][0]["records"]
    lines = [f"- **{read}** records read from {len(s['sources'])} source(s); "
             f"**{sum(sizes.values())}** written: train {sizes['train']}, val {sizes['val']}, test {sizes['test']}."]
    if pii["enabled"]:
        found = sum(pii["by_entity"].values())
        lines.append(f"- Personal data: **{found}** values redacted in {pii['records_with_pii']} records; "
                     f"{pii['records_dropped']} records dropped. Original values appear nowhere in this folder: "
                     "`rejects.jsonl` lists only the location and the reason of each record left out.")
    else:
        lines.append("- **Personal-data redaction was turned off** (`pii: null`): the records may hold personal "
                     "data.")
    lines.append(f"- Duplicates removed: {dedup['exact_removed']} exact, {dedup['near_removed']} near.")
    lines.append(f"- Leakage check: {leak['pairs_found']} duplicate pair(s) across splits, resolved by "
                 f"{leak['resolve']} ({leak['moved']} moved, {leak['dropped']} dropped); {leak['remaining']} "
                 "remaining.")
    return lines


def _pii_section(s: dict[str, Any]) -> list[str]:
    pii = s["pii"]
    if not pii["enabled"]:
        return ["Redaction was turned off."]
    splits = pii["by_split"]
    rows = [[e, op, pii["by_entity"].get(e, 0), *(splits[name].get(e, 0) for name in SPLITS)]
            for e, op in pii["operators"].items()]
    out = ["Counts are values found. Per split: in the records written there (after dedup); per source: in "
           "every record read (before dedup).", "",
           _table(["entity", "operator", "found", *SPLITS], rows), ""]
    entities = list(pii["operators"])
    out += [_table(["source", *entities], [[name, *(c.get(e, 0) for e in entities)]
                                           for name, c in pii["by_source"].items()]), ""]
    if pii["examples"]:
        out += ["Examples (redacted text):", ""]
        out += [f"- `{x['at']}` {x['field']} ({x['entity_type']}): {x['snippet']}" for x in pii["examples"]]
    if pii["vault_entries"]:
        out += ["", f"{pii['vault_entries']} replacements are kept in the encrypted vault for authorised "
                    "re-identification."]
    return out


def _dedup_section(s: dict[str, Any]) -> list[str]:
    d = s["dedup"]
    out = [f"Method: exact (normalised text) and {d['method']}; the first occurrence is kept.", "",
           f"{d['exact_removed']} exact and {d['near_removed']} near duplicates removed, in {d['clusters']} "
           "cluster(s)."]
    if d["listed_clusters"]:
        out += ["", "First clusters (kept record: removed records):", ""]
        for c in d["listed_clusters"][:LISTED_CLUSTERS]:
            removed = ", ".join(f"`{r['at']}` ({r['how']})" for r in c["removed"])
            out.append(f"- `{c['kept']}`: {removed}")
    return out


def _split_section(s: dict[str, Any]) -> list[str]:
    sp = s["split"]
    out = [f"Seed {sp['seed']}; ratios train {sp['ratios']['train']}, val {sp['ratios']['val']}, test "
           f"{sp['ratios']['test']}; group key: {sp['group_key'] or 'none'}; stratify key: "
           f"{sp['stratify_key'] or 'none'}.", "",
           _table(["split", "records written", "distinct records", "groups"],
                  [[name, sp["sizes"][name], sp["unique_records"][name], sp["groups"][name]] for name in SPLITS])]
    if sp["records_without_group"]:
        out += ["", f"{sp['records_without_group']} records had no `{sp['group_key']}` and form groups of one."]
    if sp["strata"]:
        out += ["", _table(["stratum", *SPLITS], [[k, *(v[name] for name in SPLITS)] for k, v in sp["strata"].items()])]
    leak = s["leakage"]
    out += ["", "### Leakage check", "",
            f"{leak['pairs_found']} exact or near-duplicate pair(s) across splits; resolution: {leak['resolve']}; "
            f"{leak['moved']} record(s) moved, {leak['dropped']} dropped; {leak['remaining']} pair(s) remaining."]
    out += [f"- `{x['a']}` ~ `{x['b']}`" for x in leak["examples"]]
    return out


def render_card(s: dict[str, Any]) -> str:
    """The data card as Markdown, from the prepare summary (see :func:`ayar.data.prepare.prepare`)."""
    sources = _table(["source", "format", "records read", "rejected", "sha256"],
                     [[x["name"], x["format"] + (" (detected)" if x["format_detected"] else ""), x["records_read"],
                       x["rejected"], x.get("sha256", f"folder of {len(x.get('files', {}))} files")]
                      for x in s["sources"]])
    rejects = _table(["reason", "records", "meaning"],
                     [[r, n, REASONS.get(r, "")] for r, n in s["rejects"]["by_reason"].items()])
    outputs = _table(["file", "records", "sha256"],
                     [[name, o.get("records", ""), o["sha256"]] for name, o in s.get("outputs", {}).items()])
    warnings = [f"> **Warning:** {w}  " for w in s.get("warnings", [])]
    parts = [f"# Data card ({s['kind']} records)", "",
             f"Written by `ayar prepare` on {s['created_at']}. The same figures, machine-readable, are in "
             "`manifest.json`.", "", *_overview(s), "", *(["\n".join(warnings), ""] if warnings else []),
             "## Sources", "", sources, "",
             "## Records at every step", "", _table(["step", "records"], [[x["step"], x["records"]]
                                                                           for x in s["steps"]]), "",
             "## Records left out", "", f"{s['rejects']['total']} records, each listed in `rejects.jsonl` with its "
             "location and reason.", "", rejects, "",
             "## Personal data", "", *_pii_section(s), "",
             "## Duplicates", "", *_dedup_section(s), "",
             "## Split", "", *_split_section(s), "",
             "## Output files", "", outputs, "",
             "## Settings", "", "```yaml", yaml.safe_dump(s["settings"], sort_keys=False, allow_unicode=True).strip(),
             "```", ""]
    return "\n".join(parts)


def summary_line(s: dict[str, Any]) -> str:
    """One line for the console after ``ayar prepare``."""
    sizes, d = s["split"]["sizes"], s["dedup"]
    found = sum(s["pii"]["by_entity"].values())
    return (f"{s['steps'][0]['records']} records read; train {sizes['train']}, val {sizes['val']}, test "
            f"{sizes['test']}; {s['rejects']['total']} left out (see rejects.jsonl); {found} personal-data values "
            f"redacted; {d['exact_removed']} exact and {d['near_removed']} near duplicates removed; "
            f"{s['records_per_second']} records/s")


def render_inspection(report: dict[str, Any]) -> str:
    """``ayar data inspect``'s report as text (see :func:`ayar.data.prepare.inspect_file`)."""
    length = report["length"]
    lines = [f"{report['path']}: {report['container']}, format {report['format']} ({report['kind']} records)",
             f"records: {report['records']}, valid {report['valid']}, invalid "
             + (", ".join(f"{k} {v}" for k, v in report["invalid"].items()) or "0"),
             *(f"  {p}" for p in report["problems"])]
    if "min" in length:
        lines.append(f"length ({length['unit']}): min {length['min']}, median {length['median']}, mean "
                     f"{length['mean']}, p95 {length['p95']}, max {length['max']}")
    pii = report["pii"]
    lines.append(f"personal data in the first {pii['records_scanned']} valid records ({pii['records_with_pii']} with "
                 "some): " + (", ".join(f"{k} {v}" for k, v in pii["by_entity"].items()) or "none found"))
    dup = report["duplicates"]
    lines.append(f"duplicates: {dup['exact']} exact, {dup['near']} near ({100 * dup['rate']:.1f}% of valid records)")
    if "tokenizer" in report:
        t = report["tokenizer"]
        lines.append(f"tokenizer: {t['fertility']:.2f} tokens per word, {t['chars_per_token']:.2f} characters per "
                     f"token, {100 * t['split_3plus']:.1f}% of words in 3+ pieces, {100 * t['byte_fallback_rate']:.2f}% "
                     "byte/unknown tokens; most fragmented frequent words:")
        lines += [f"  {w['word']} ({w['count']}x): {' | '.join(w['pieces'])}" for w in t["fragmented"]]
    return "\n".join(lines)
