"""Recall of the redactor on chat-style Turkish messages, per entity kind, and distractors kept.

    python bench/pii.py                  # 600 records, seed 0 (the README figures)
    python bench/pii.py --records 2000 --seed 3 --leaks

The records come from ``ayar.data.pii.benchmark`` (see its docstring): written
for this benchmark, in lower case, as typed and in upper case, with look-alike
distractors. The redactor runs with every entity type, ICD10 included (it is
off by default and must be configured). Prints JSON; ``--leaks`` adds examples
of missed entities and of distractors that were redacted.
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--leaks", action="store_true", help="print missed entities and lost distractors")
    args = parser.parse_args()

    from ayar.data.pii import RedactionConfig, Redactor
    from ayar.data.pii.benchmark import benchmark_records, gazetteer_coverage, score
    from ayar.data.pii.config import ENTITIES

    records = benchmark_records(args.records, args.seed)
    redactor = Redactor(RedactionConfig(entities=list(ENTITIES)))
    started = time.perf_counter()
    result = score(records, redactor)
    result["seconds"] = round(time.perf_counter() - started, 2)
    result["gazetteer_holds"] = gazetteer_coverage()
    if not args.leaks:
        result.pop("leaks")
    print(json.dumps(result, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
