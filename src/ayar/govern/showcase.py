"""The governance tail of a pipeline run (the demo's last step): verify the ledger, trace an exported file,
look up one data subject, write the model card and the Annex IV draft — each printed as the CLI prints it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ayar.ui import console


def first_tckn(jsonl: str | Path, lines: set[int] | None = None) -> str | None:
    """The first checksum-valid T.C. Kimlik No in a raw JSONL file (a subject to look up), or None.

    Args:
        lines: only these 1-based line numbers (e.g. the ``meta.line`` of records that reached a run).
    """
    from ayar.data.pii.checksums import tckn_is_valid

    with open(jsonl, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if lines is not None and number not in lines:
                continue
            for candidate in re.findall(r"(?<!\d)[1-9]\d{10}(?!\d)", line):
                if tckn_is_valid(candidate):
                    return candidate
    return None


def governance_tail(run_dir: str | Path, *, export_file: str | Path | None = None, subject: str | None = None,
                    kind: str = "tckn", secret: bytes | str | None = None) -> dict[str, Any]:
    """Run ``ayar audit verify``, ``audit lineage EXPORT``, ``audit subject``, ``ayar card`` and ``ayar docs``.

    Args:
        run_dir: the run folder (its recipe names the ledger).
        export_file: a file to trace (e.g. the exported GGUF); None: the run itself.
        subject: an identifier to look up (never printed); None skips the lookup.
        kind: its kind (tckn, email, phone, customer_id, ...).
        secret: the PII secret prepare used; None: ``$AYAR_PII_SECRET``.

    Returns:
        ``{"verified": bool, "ledger": path, "lineage": dict, "subject": dict | None, "card": [paths],
        "docs": [paths]}``.
    """
    from ayar.data.pii.config import RedactionConfig
    from ayar.data.pii.operators import load_secret
    from ayar.govern.annex_iv import write_docs
    from ayar.govern.card import write_cards
    from ayar.govern.ledger import verify
    from ayar.govern.lineage import lineage, render_lineage
    from ayar.govern.record import ledger_for_run
    from ayar.govern.subject import find_subject, index_path, render_subject

    ledger = ledger_for_run(run_dir)
    cards = write_cards(run_dir)
    docs = write_docs(run_dir, ["md", "html"])
    checked = verify(ledger)
    console.print(f"audit ledger {ledger.path}: {checked.entries} entries, {checked.files_checked} files re-hashed: "
                  + ("intact" if checked.ok else "BROKEN: " + "; ".join(checked.problems)), markup=False)
    traced = lineage(ledger.entries(), str(export_file or run_dir))
    console.print(render_lineage(traced), markup=False)
    found = None
    key = secret.encode() if isinstance(secret, str) else secret
    key = key or load_secret(RedactionConfig())
    if subject is not None and key is not None:
        found = find_subject(ledger.entries(), index_path, kind, subject, key)
        console.print(render_subject(found, kind), markup=False)
    console.print(f"model card: {', '.join(map(str, cards))}; Annex IV: {', '.join(map(str, docs))}", markup=False)
    return {"verified": checked.ok, "ledger": str(ledger.path), "lineage": traced, "subject": found,
            "card": [str(p) for p in cards], "docs": [str(p) for p in docs]}
