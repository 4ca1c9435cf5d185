"""Benchmark of ``ayar prepare`` on demo-like support tickets: records/s, peak memory, where time goes.

    python bench/prepare.py                       # 100k tickets, 1 and 2 redaction processes
    python bench/prepare.py --records 20000 --workers 1 --profile-records 3000

Each measured run is a fresh Python process (so its peak RSS is the prepare
stage's alone; the workers' peak is reported apart), reading a JSONL file of
``ayar.demo.tickets`` records (every one full of Turkish PII, ~8% exact or near
duplicates) with the default settings: mask every entity, exact + near dedup,
80/10/10 split. A last, smaller run under cProfile splits the time by stage.
Wall-clock records/s depend on what else the machine runs; records per CPU
second (this process and its workers) do not.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Stage -> functions whose cumulative time is that stage (pstats keys: file suffix, function name).
STAGES = {
    "read + parse": [("data/readers.py", "_jsonl")],
    "convert + validate": [("data/formats.py", "convert")],
    "clean + length": [("data/clean.py", "clean_record"), ("data/clean.py", "check")],
    "PII: total": [("data/pii/engine.py", "_redact_many")],
    "  spaCy tokenizer": [("nlp_engine/slim_spacy_nlp_engine.py", "process_batch")],
    "  recognizers + context": [("presidio_analyzer/analyzer_engine.py", "analyze")],
    "  anonymizer": [("data/pii/engine.py", "_apply")],
    "MinHash signatures": [("data/dedup.py", "signatures")],
    "exact + near dedup": [("data/dedup.py", "deduplicate")],
    "leakage pairs": [("data/dedup.py", "duplicate_pairs")],
    "split": [("data/split.py", "assign_splits"), ("data/split.py", "resolve_leakage")],
    "write splits": [("data/prepare.py", "_write")],
}


def make_data(path: Path, n: int) -> None:
    from ayar.demo.tickets import ticket_records

    with path.open("w", encoding="utf-8") as fh:
        for record in ticket_records(n, seed=0):
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")


def run_once(data: Path, out: Path, workers: int) -> dict:
    """One prepare run in this process; returns its figures (called in a fresh process)."""
    started = time.perf_counter()
    import ayar.data.pii.engine  # noqa: F401  (Presidio's import: seconds, paid once per process)
    from ayar.data.prepare import prepare
    from ayar.data.prepare_config import PrepareSection

    imported, cpu_before = time.perf_counter(), _cpu_seconds()
    section = PrepareSection(sources=[{"path": str(data)}], output_dir=str(out), workers=workers)
    summary = prepare(section, data.parent, show_progress=False)
    seconds, cpu = time.perf_counter() - imported, _cpu_seconds() - cpu_before
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    read = summary["steps"][0]["records"]
    return {"workers": workers, "records": read, "import_s": round(imported - started, 1), "seconds": round(seconds, 1),
            "records_per_s": round(read / seconds, 1), "cpu_s": round(cpu, 1),
            "records_per_cpu_s": round(read / cpu, 1), "peak_rss_mib": round(rss / 1024),
            "peak_worker_rss_mib": round(children / 1024), "written": summary["split"]["sizes"],
            "removed_duplicates": summary["dedup"]["exact_removed"] + summary["dedup"]["near_removed"]}


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the redaction workers), user + system."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def profile(data: Path, out: Path) -> dict[str, float]:
    """Seconds per stage (cumulative, in this process) for one single-process run."""
    profiler = cProfile.Profile()
    profiler.enable()
    run_once(data, out, workers=1)
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # (file, line, name) -> (cc, nc, tt, ct, callers)
    times = {"import (Presidio, once)": 0.0}
    for stage, functions in STAGES.items():
        times[stage] = sum(ct for (file, _, name), (_, _, _, ct, _) in stats.items()
                           if any(file.endswith(suffix) and name == fn for suffix, fn in functions))
    times["total"] = max(ct for (file, _, name), (_, _, _, ct, _) in stats.items() if name == "run_once")
    times["import (Presidio, once)"] = sum(ct for (file, _, name), (_, _, _, ct, _) in stats.items()
                                           if name == "<module>" and file.endswith("data/pii/engine.py"))
    return times


def child(argv: list[str]) -> None:
    kind, data, out, workers = argv
    result = run_once(Path(data), Path(out), int(workers)) if kind == "run" else profile(Path(data), Path(out))
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--workers", default="1,2", help="comma-separated redaction process counts to measure")
    parser.add_argument("--profile-records", type=int, default=5000, help="0 to skip the profile")
    parser.add_argument("--dir", type=Path, default=None, help="working folder (default: a temporary one)")
    args = parser.parse_args()
    folder = args.dir or Path(tempfile.mkdtemp(prefix="ayar-bench-prepare-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} CPUs; python {sys.version.split()[0]}; folder {folder}")

    data = folder / f"tickets_{args.records}.jsonl"
    if not data.exists():
        started = time.perf_counter()
        make_data(data, args.records)
        print(f"wrote {args.records} tickets ({data.stat().st_size / 2**20:.0f} MiB) in "
              f"{time.perf_counter() - started:.0f} s")
    for workers in (int(w) for w in args.workers.split(",")):
        result = _in_child("run", data, folder / f"out_w{workers}", workers)
        print(json.dumps(result))

    if args.profile_records:
        small = folder / f"tickets_{args.profile_records}.jsonl"
        if not small.exists():
            make_data(small, args.profile_records)
        times = _in_child("profile", small, folder / "out_profile", 1)
        total = times.pop("total")
        print(f"\nwhere the time goes ({args.profile_records} records, 1 process, {total:.1f} s under cProfile, "
              "which slows Python code more than C code):")
        for stage, seconds in times.items():
            print(f"  {stage:<24} {seconds:7.2f} s  {100 * seconds / total:5.1f}%")


def _in_child(kind: str, data: Path, out: Path, workers: int) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", kind, str(data), str(out), str(workers)],
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    else:
        main()
