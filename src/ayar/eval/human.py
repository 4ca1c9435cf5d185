"""Expert (human) evaluation: a blinded pairwise set, ratings from a page or a CSV, results with agreement.

``ayar eval human export RUN --n 100`` draws examples from ``RUN/eval/examples.jsonl``
(what ``ayar eval`` wrote) and writes, under ``RUN/eval/human/``:

- ``items.jsonl`` and ``ratings.csv``: what raters see. Each item has a prompt and two
  answers, A and B; which model wrote which is decided by a coin per item and never
  appears in these files (nor the model names, nor the example ids).
- ``key.json``: the coin flips (item -> which system is A), the systems' names and the
  example ids. Keep it from the raters; results are un-blinded with it alone.
- ``raters.json``: one secret token per rater, for the rating page's link (``ayar ui``).

A rater's verdict on an item is one of ``both_good``, ``a``, ``b``, ``both_bad``.
Un-blinded for the evaluated system X (the run's tuned model) against Y (its base, or
another run's tuned model), it is a ``win``, a ``loss``, or a tie (``tie_good``/``tie_bad``).

Results (``RUN/eval/human.json``, shown in the report and recorded in the audit ledger):
win/tie/loss per rater with Wilson 95% intervals, pooled over raters with an item
bootstrap (ratings of one item are not independent), Cohen's kappa for every pair of
raters and Fleiss' kappa over the items every rater rated, and agreement with the LLM
judge when ``ayar eval`` ran one (on the same base vs tuned pairs).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import random
import re
import secrets
from pathlib import Path
from typing import Any

from ayar.errors import AyarError

VERDICTS = ("both_good", "a", "b", "both_bad")
OUTCOMES = ("win", "tie_good", "tie_bad", "loss")
CSV_COLUMNS = ("item", "prompt", "answer_a", "answer_b", "verdict", "comment")
RATER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_COMMENT = 2000


def human_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "eval" / "human"


def _read_examples(run_dir: Path) -> dict[str, dict]:
    path = run_dir / "eval" / "examples.jsonl"
    if not path.is_file():
        raise AyarError(f"{run_dir}: no eval/examples.jsonl; run `ayar eval {run_dir}` first")
    out = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise AyarError(f"{path}:{number}: not JSON; rerun `ayar eval {run_dir}`") from None
            out[str(row["id"])] = row
    return out


def _question(prompt: list[dict] | str) -> str:
    """The conversation a rater reads: the last user turn, after any earlier turns as context."""
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(f"{m['role']}: {m['content']}" if m["role"] != "user" or i < len(prompt) - 1
                       else m["content"] for i, m in enumerate(prompt))


def export_set(run_dir: str | Path, n: int = 100, *, against: str | Path | None = None, raters: list[str] = (),
               seed: int = 0, overwrite: bool = False) -> Path:
    """Write the blinded pairwise set of ``n`` examples; returns its folder.

    Args:
        against: another run evaluated on the same examples; its tuned replies are system Y
            (default: the run's own base model replies).
        raters: names for the rating page's links.

    Raises:
        AyarError: no evaluation to draw from, no base replies, no shared examples, an
            existing set (without ``overwrite``), or a bad rater name.
    """
    run_dir = Path(run_dir)
    if n < 1:
        raise AyarError(f"--n {n}: must be at least 1")
    for name in raters:
        if not RATER.match(name):
            raise AyarError(f"--rater {name!r}: use 1-64 letters, digits and ._- (a name, not personal data)")
    out = human_dir(run_dir)
    if (out / "key.json").exists() and not overwrite:
        raise AyarError(f"{out}: a human-evaluation set exists (its ratings would no longer match); pass "
                        "--overwrite to replace it")
    examples = _read_examples(run_dir)
    if against is None:
        other = {k: v.get("base") for k, v in examples.items()}
        systems = {"x": f"{run_dir.resolve().name} (tuned)", "y": f"{run_dir.resolve().name} (base)"}
        if not any(other.values()):
            raise AyarError(f"{run_dir}: eval/examples.jsonl has no base replies (baseline off?); pass --against "
                            "RUN2 to compare with another run")
    else:
        other = {k: v.get("tuned") for k, v in _read_examples(Path(against)).items()}
        systems = {"x": Path(run_dir).resolve().name, "y": Path(against).resolve().name}
    ids = sorted(k for k in examples if other.get(k) is not None and examples[k].get("tuned") is not None)
    if not ids:
        raise AyarError(f"{run_dir}: no example has replies from both systems")
    rng = random.Random(seed)
    chosen = rng.sample(ids, min(n, len(ids)))
    items, key = [], {}
    for index, example_id in enumerate(chosen, start=1):
        item = f"h{index:04d}"
        x_first = rng.random() < 0.5
        x, y = examples[example_id]["tuned"], other[example_id]
        items.append({"item": item, "prompt": _question(examples[example_id]["prompt"]),
                      "answer_a": x if x_first else y, "answer_b": y if x_first else x})
        key[item] = {"example_id": example_id, "a": "x" if x_first else "y"}
    out.mkdir(parents=True, exist_ok=True)
    (out / "ratings.jsonl").unlink(missing_ok=True)
    _write_json(out / "key.json", {"systems": systems, "seed": seed, "against": str(against) if against else None,
                                   "created": _now(), "items": key})
    (out / "items.jsonl").write_text("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items),
                                     encoding="utf-8")
    (out / "ratings.csv").write_text(blank_csv(items), encoding="utf-8")
    _write_json(out / "raters.json", {name: secrets.token_urlsafe(16) for name in raters})
    return out


def add_rater(run_dir: str | Path, name: str) -> str:
    """Give ``name`` a rating link (a secret token) for the run's set; returns the token.

    Raises:
        AyarError: no set, a bad name, or a rater of that name already.
    """
    if not RATER.match(name):
        raise AyarError(f"rater {name!r}: use 1-64 letters, digits and ._- (a name, not personal data)")
    load_items(run_dir)  # there must be a set to rate
    tokens = rater_tokens(run_dir)
    if name in tokens:
        raise AyarError(f"rater {name!r} already has a link")
    tokens[name] = secrets.token_urlsafe(16)
    _write_json(human_dir(run_dir) / "raters.json", tokens)
    return tokens[name]


def blank_csv(items: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_COLUMNS)
    writer.writeheader()
    for item in items:
        writer.writerow({**item, "verdict": "", "comment": ""})
    return buffer.getvalue()


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _write_json(path: Path, data: Any) -> None:
    from ayar.govern.manifest import write_json_atomic

    write_json_atomic(path, data)


def load_items(run_dir: str | Path) -> list[dict]:
    """The blinded items (what a rater sees).

    Raises:
        AyarError: no set was exported.
    """
    path = human_dir(run_dir) / "items.jsonl"
    if not path.is_file():
        raise AyarError(f"{run_dir}: no human-evaluation set; run `ayar eval human export {run_dir}` first")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def rater_tokens(run_dir: str | Path) -> dict[str, str]:
    path = human_dir(run_dir) / "raters.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def add_rating(run_dir: str | Path, rater: str, item: str, verdict: str, comment: str = "",
               source: str = "ui") -> dict:
    """Append one rating (a later rating of the same item by the same rater replaces it in results).

    Raises:
        AyarError: an unknown item, verdict or a bad rater name.
    """
    if not RATER.match(rater):
        raise AyarError(f"rater {rater!r}: use 1-64 letters, digits and ._-")
    if verdict not in VERDICTS:
        raise AyarError(f"verdict {verdict!r}: choose one of {', '.join(VERDICTS)}")
    if item not in {i["item"] for i in load_items(run_dir)}:
        raise AyarError(f"item {item!r} is not in this run's human-evaluation set")
    record = {"rater": rater, "item": item, "verdict": verdict, "comment": (comment or "")[:MAX_COMMENT],
              "source": source, "time": _now()}
    with open(human_dir(run_dir) / "ratings.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return record


def import_csv(run_dir: str | Path, path: str | Path, rater: str) -> int:
    """Import a filled ``ratings.csv`` as ``rater``'s ratings; returns how many rows had a verdict.

    Every problem is reported at once, each with its line; nothing is imported when there is one.

    Raises:
        AyarError: the file is missing or not the set's CSV, or rows hold unknown items or verdicts.
    """
    path = Path(path)
    if not path.is_file():
        raise AyarError(f"{path}: no such file")
    if not RATER.match(rater):
        raise AyarError(f"--rater {rater!r}: use 1-64 letters, digits and ._-")
    known = {i["item"] for i in load_items(run_dir)}
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"item", "verdict"} <= set(reader.fieldnames):
            raise AyarError(f"{path}: needs the columns item and verdict (the ratings.csv of "
                            f"`ayar eval human export`)")
        rows, problems = [], []
        for row in reader:
            line = reader.line_num
            verdict = (row.get("verdict") or "").strip().lower().replace(" ", "_")
            if not verdict:
                continue
            if row.get("item") not in known:
                problems.append(f"line {line}: item {row.get('item')!r} is not in the set")
            elif verdict not in VERDICTS:
                problems.append(f"line {line}: verdict {verdict!r}; write one of {', '.join(VERDICTS)}")
            else:
                rows.append((row["item"], verdict, row.get("comment") or ""))
    if problems:
        raise AyarError(f"{path}: {len(problems)} problems, nothing imported:\n  " + "\n  ".join(problems))
    if not rows:
        raise AyarError(f"{path}: no row has a verdict; fill the verdict column with {', '.join(VERDICTS)}")
    for item, verdict, comment in rows:
        add_rating(run_dir, rater, item, verdict, comment, source="csv")
    return len(rows)


def latest_ratings(run_dir: str | Path) -> dict[tuple[str, str], dict]:
    """(rater, item) -> the rater's latest rating of the item."""
    path = human_dir(run_dir) / "ratings.jsonl"
    out: dict[tuple[str, str], dict] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                out[(record["rater"], record["item"])] = record
    return out


def unblind(verdict: str, x_is: str) -> str:
    """A verdict on (A, B) as the outcome for system X, given which side X was (``"a"`` or ``"b"``)."""
    if verdict == "both_good":
        return "tie_good"
    if verdict == "both_bad":
        return "tie_bad"
    return "win" if verdict == x_is else "loss"
