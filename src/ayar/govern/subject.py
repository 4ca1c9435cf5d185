"""Erasure lookup: which datasets, runs, exports and served adapters hold a data subject's records.

At prepare time each record's subject identifiers — the value of the split's
``group_key`` (e.g. customer_id) and every identifier the redactor detected,
read from the text *before* redaction — are turned into keyed hashes::

    digest = HMAC-SHA256(secret, "ayar-subject\\0" + KIND + "\\0" + normalised value)[:16 bytes]

with the PII secret (``$AYAR_PII_SECRET`` or ``pii.secret_file``), and written to
``subjects.json`` in the dataset folder: ``{digest: {"splits": {split: records},
"records": ["source:line", ...]}}``. The ledger keeps a copy by content hash, so a
lookup still works after the dataset folder is deleted; it holds no raw value,
and without the secret a digest cannot be tested against guesses (a T.C. Kimlik
No has only ~9 x 10^8 values, so an unkeyed hash would be no protection).

Values are normalised as the redactor's keyed operators normalise them
("0532 123 45 67" and "+90 532 123 4567" are one phone number).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from ayar.errors import AyarError
from ayar.fsutil import atomic_write

INDEX_NAME = "subjects.json"
INDEX_VERSION = 1
DIGEST_BYTES = 16  # 128 bits: no collision among billions of identifiers
GROUP_KIND = "GROUP_KEY"
# `ayar audit subject --kind` -> the kind hashed (entity types of ayar.data.pii, or the group key).
KINDS = {"tckn": "TCKN", "email": "EMAIL_ADDRESS", "phone": "PHONE_NUMBER", "customer_id": GROUP_KIND,
         "iban": "IBAN", "vkn": "VKN", "card": "CREDIT_CARD", "name": "PERSON", "plate": "LICENSE_PLATE"}
INDEXED = frozenset(KINDS.values())


def normalised(kind: str, value: str) -> str:
    """The form of ``value`` that is hashed (the redactor's normalisation; group keys: stripped)."""
    if kind == GROUP_KIND:
        return value.strip()
    from ayar.data.pii.operators import normalise

    return normalise(kind, value)


def subject_digest(secret: bytes, kind: str, value: str) -> str:
    """Hex keyed digest of one identifier (see the module docstring)."""
    return _digest(secret, kind, value).hex()


def _digest(secret: bytes, kind: str, value: str) -> bytes:
    message = f"ayar-subject\x00{kind}\x00{normalised(kind, value)}".encode()
    return hmac.new(secret, message, hashlib.sha256).digest()[:DIGEST_BYTES]


def key_id(secret: bytes) -> str:
    """Names the secret an index was built with, without revealing it (lookups with another secret find nothing)."""
    return hmac.new(secret, b"ayar-subject-key-id", hashlib.sha256).hexdigest()[:16]


class SubjectCollector:
    """Collects the keyed identifiers of each record ``prepare`` keeps, in work-file order.

    Args:
        secret: the PII secret, or None: nothing is collected (``prepare`` warns).
    """

    def __init__(self, secret: bytes | None):
        self.secret = secret
        self.rows: list[tuple[bytes, ...]] = []  # per work-file row: its digests (16 bytes each: 250k rows fit)
        self.index: dict[str, dict[str, Any]] = {}

    @classmethod
    def from_pii(cls, pii) -> SubjectCollector:
        """A collector keyed with the secret of the ``pii`` settings (None without one)."""
        from ayar.data.pii.config import RedactionConfig
        from ayar.data.pii.operators import load_secret

        return cls(load_secret(pii or RedactionConfig()))

    def add(self, original, group: str | None, found: list) -> None:
        """Record one stored row: its group key value and the values behind its redaction findings.

        Args:
            original: the record before redaction (a ``Record`` of ayar.data.formats).
            group: its ``split.group_key`` value, or None.
            found: ``[(finding, redacted text)]`` as the redaction returns them; a finding's span
                indexes the original text of its field.
        """
        if self.secret is None:
            self.rows.append(())
            return
        from ayar.data.formats import record_texts

        digests = {_digest(self.secret, GROUP_KIND, group)} if group else set()
        for text, finding in _values(record_texts(original), found):
            if finding.entity_type in INDEXED:
                digests.add(_digest(self.secret, finding.entity_type, text[finding.start:finding.end]))
        self.rows.append(tuple(sorted(digests)))

    def finish(self, assignment: dict[int, str], where) -> None:
        """Build the index of the rows that reached a split.

        Args:
            assignment: work-file row -> split of every record written.
            where: row -> "source:line" of the record.
        """
        index: dict[str, dict[str, Any]] = defaultdict(lambda: {"splits": defaultdict(int), "records": []})
        for row, split in sorted(assignment.items()):
            for digest in self.rows[row]:
                index[digest.hex()]["splits"][split] += 1
                index[digest.hex()]["records"].append(where(row))
        self.index = {d: index[d] for d in sorted(index)}

    def write(self, folder: Path) -> dict[str, Any]:
        """Write ``folder/subjects.json``; returns what the manifest and the ledger record about it."""
        from ayar.govern.manifest import sha256_file

        if self.secret is None:
            (folder / INDEX_NAME).unlink(missing_ok=True)  # an older index would describe other records
            return {"written": False, "reason": "no PII secret (set AYAR_PII_SECRET or pii.secret_file): "
                    "`ayar audit subject` cannot search this dataset"}
        body = {"ayar_subject_index_version": INDEX_VERSION, "scheme": f"hmac-sha256/{DIGEST_BYTES * 8}",
                "key_id": key_id(self.secret), "subjects": self.index}
        with atomic_write(folder / INDEX_NAME) as fh:
            fh.write(json.dumps(body, ensure_ascii=False, sort_keys=True) + "\n")
        return {"written": True, "file": INDEX_NAME, "subjects": len(self.index), "key_id": body["key_id"],
                "sha256": sha256_file(folder / INDEX_NAME)}


def _values(texts: list[tuple[str, str]], found: list) -> list[tuple[str, Any]]:
    """Pair each finding with the original text it was found in.

    The redaction returns a record's findings text by text, in reading order, each labelled with
    its text's role or field (not unique: two user turns) and carrying its text's redacted form R.
    A run of findings belongs to a text t when t's pieces between the findings equal R's pieces
    between the replacements, which identifies the text exactly.
    """
    pairs, k = [], 0
    for label, text in texts:
        if k >= len(found):
            break
        finding, redacted = found[k]
        if finding.field != label or text[:finding.start] != redacted[:finding.output_start]:
            continue
        end, prev = k, None  # extend the run while the pieces between findings agree
        while end < len(found) and found[end][0].field == label and found[end][1] == redacted:
            f = found[end][0]
            if prev is not None and (f.start < prev.end or
                                     text[prev.end:f.start] != redacted[prev.output_end:f.output_start]):
                break
            prev, end = f, end + 1
        # the longest run whose tail matches too (the next text may share the label and the redacted form)
        end = next((e for e in range(end, k, -1) if text[found[e - 1][0].end:] ==
                    redacted[found[e - 1][0].output_end:]), None)
        if end is not None:
            pairs += [(text, f) for f, _ in found[k:end]]
            k = end
    return pairs


# ----------------------------------------------------------------------------- lookup


def find_subject(entries: list[dict[str, Any]], store_path, kind: str, value: str, secret: bytes) -> dict[str, Any]:
    """Where one data subject's records went, from the ledger's prepare entries and their subject indexes.

    Args:
        entries: the ledger's entries.
        store_path: entry -> path of the subject index it references (the ledger's copy).
        kind: one of :data:`KINDS`.
        value: the identifier as the person gives it.
        secret: the PII secret the indexes were built with.

    Returns:
        ``{"kind", "datasets": [...], "runs": [...], "exports": [...], "served": [...], "unindexed": [...],
        "other_key": [...]}``; each dataset lists its splits and source records.

    Raises:
        AyarError: unknown kind.
    """
    from ayar.govern.lineage import forward

    if kind not in KINDS:
        raise AyarError(f"--kind {kind!r}: choose one of {', '.join(KINDS)}")
    digest = subject_digest(secret, KINDS[kind], value)
    found: dict[str, Any] = {"kind": kind, "datasets": [], "runs": [], "exports": [], "evaluations": [],
                             "served": [], "unindexed": [], "other_key": []}
    for entry in entries:
        if entry.get("event") != "prepare":
            continue
        index_ref = (entry.get("data") or {}).get("subject_index")
        if not index_ref:
            found["unindexed"].append(_dataset(entry))
            continue
        index = _read_index(store_path(entry))
        if index is None:
            found["unindexed"].append(_dataset(entry))
            continue
        if index.get("key_id") != key_id(secret):
            found["other_key"].append(_dataset(entry))
            continue
        hit = index["subjects"].get(digest)
        if hit is None:
            continue
        splits = dict(hit["splits"])
        found["datasets"].append({**_dataset(entry), "splits": splits, "records": hit["records"]})
        labels = [f"{s}.jsonl" for s in splits]
        hashes = {ref["sha256"] for label, ref in entry.get("outputs", {}).items() if label in labels}
        _collect_downstream(forward(entries, hashes), found)
    unloaded = {(e["data"].get("server"), e["data"].get("name")) for e in entries if e.get("event") == "serve_unload"}
    for item in found["served"]:  # unloads read no file, so the content walk does not reach them
        item["unloaded"] = (item["server"], item["name"]) in unloaded
    return found


def index_path(entry: dict[str, Any]) -> Path | None:
    """The subject index a prepare entry references: the ledger's copy, else the dataset's own file."""
    index = (entry.get("data") or {}).get("subject_index") or {}
    for candidate in (index.get("copy"), (entry.get("outputs") or {}).get("subjects.json", {}).get("path")):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def _dataset(entry: dict) -> dict[str, Any]:
    return {"entry": entry["seq"], "time": entry["time"], "dataset": (entry.get("data") or {}).get("output_dir")}


def _read_index(path: Path | None) -> dict | None:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8")) if path else None
    except (OSError, ValueError):
        return None


def _collect_downstream(reached: list[dict[str, Any]], found: dict[str, Any]) -> None:
    """Sort the entries reached from a dataset into runs, evaluations, exports and served adapters."""
    for entry in reached:
        event, data = entry.get("event"), entry.get("data") or {}
        item = {"entry": entry["seq"], "time": entry["time"]}
        if event == "train":
            found["runs"].append({**item, "run": data.get("run_dir")})
        elif event == "eval":
            found["evaluations"].append({**item, "run": data.get("run_dir")})
        elif event == "export":
            found["exports"].append({**item, "path": data.get("path"), "format": data.get("format")})
        elif event == "serve_load":
            found["served"].append({**item, "name": data.get("name"), "server": data.get("server")})
    for key in ("runs", "evaluations", "exports", "served"):  # several datasets may reach the same entry
        seen, unique = set(), []
        for item in found[key]:
            if item["entry"] not in seen:
                seen.add(item["entry"])
                unique.append(item)
        found[key] = unique


def render_subject(found: dict[str, Any], kind_label: str) -> str:
    """The lookup as text, ending with what to do next and the commands for it."""
    lines = [f"data subject ({kind_label}): "
             + (f"found in {len(found['datasets'])} prepared dataset(s)" if found["datasets"] else
                "not found in any indexed dataset")]
    for d in found["datasets"]:
        splits = ", ".join(f"{s} {n}" for s, n in sorted(d["splits"].items()))
        lines.append(f"  dataset {d['dataset']} (ledger entry {d['entry']}): {splits} record(s); source "
                     f"records: {', '.join(d['records'][:10])}{' ...' if len(d['records']) > 10 else ''}")
    for key, label in (("runs", "trained on them"), ("evaluations", "evaluated on them"),
                       ("exports", "exported from those runs"), ("served", "served")):
        for item in found[key]:
            what = item.get("run") or item.get("path") or item.get("name")
            extra = "" if key != "served" else (" (unloaded since)" if item["unloaded"] else " (no unload recorded)")
            lines.append(f"  {label}: {what} (ledger entry {item['entry']}, {item['time']}){extra}")
    if found["unindexed"]:
        lines.append(f"  note: {len(found['unindexed'])} prepared dataset(s) have no subject index (prepared "
                     "without a PII secret); they cannot be searched: "
                     + ", ".join(str(d['dataset']) for d in found['unindexed']))
    if found["other_key"]:
        lines.append(f"  note: {len(found['other_key'])} dataset(s) were indexed with another secret")
    if found["datasets"]:
        lines += ["what to do next:",
                  "  1. remove the listed source records (or the person's records) from the source files;",
                  "  2. re-prepare each dataset: ayar prepare RECIPE",
                  "  3. retrain each run listed: ayar train RECIPE --overwrite (or drop the run and its adapter);",
                  "  4. delete or re-export the exports listed, and unload served adapters: "
                  "curl -X DELETE http://HOST/admin/adapters/NAME;",
                  "  5. check the result: ayar audit subject VALUE --kind KIND (the new datasets no longer list it)."]
    return "\n".join(lines)
