"""A governed pipeline on the tiny model, built once per module: two prepared ticket datasets with personal
data, a run trained on each, an evaluation and a gate-bypassing export of run A, all in one ledger."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from helpers import colour_conversations, write_jsonl


@dataclass
class Customer:
    customer_id: str
    tckn: str
    email: str
    phone: str  # as written in the tickets
    name: str


@dataclass
class Pipeline:
    root: Path
    ledger: Path
    secret_file: Path
    customers: dict[str, Customer]  # c1, c2 in dataset A; c3 in dataset B
    sources: dict[str, Path]
    runs: dict[str, Path]
    export_folder: Path


def customers() -> dict[str, Customer]:
    from ayar.data.pii.fakes import fake_tckn

    rng = random.Random(7)
    return {
        "c1": Customer("MUS-1001", fake_tckn(rng), "ayse.kaya@example.com", "0532 123 45 67", "Ayşe Kaya"),
        "c2": Customer("MUS-1002", fake_tckn(rng), "mehmet.oz@example.com", "0544 765 43 21", "Mehmet Öz"),
        "c3": Customer("MUS-1003", fake_tckn(rng), "zeynep.ak@example.com", "0555 222 33 44", "Zeynep Ak"),
    }


def tickets(people: list[Customer], per_person: int) -> list[dict]:
    out = []
    for p in people:
        for i in range(per_person):
            out.append({"customer_id": p.customer_id, "messages": [
                {"role": "user", "content": f"Merhaba, ben {p.name}. T.C. kimlik no {p.tckn}, telefonum {p.phone}, "
                                            f"e-posta {p.email}. Sipariş {i + 1} için iade istiyorum."},
                {"role": "assistant", "content": f"Talebiniz alındı, iade numaranız R{i + 1}. İyi günler dileriz."},
            ]})
    return out


def governed_recipe(path: Path, body: dict, ledger: Path) -> Path:
    body = {**body, "governance": {"ledger": str(ledger), "purpose": "iade taleplerinin yönlendirilmesi",
                                   "legal_basis": "meşru menfaat (KVKK 5/2-f)", "retention_days": 365,
                                   "controller": "Örnek Perakende A.Ş.", "contact": "kvkk@example.com",
                                   "intended_use": "Müşteri iade taleplerine ilk yanıt taslağı"}}
    path.write_text(yaml.safe_dump(body, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, tiny_llama) -> Pipeline:
    from ayar.data.prepare import prepare
    from ayar.eval.compare import evaluate_run
    from ayar.export.run import export_run
    from ayar.recipe import load_recipe
    from ayar.train.run import train_from_recipe

    root = tmp_path_factory.mktemp("governed")
    ledger = root / "ledger.jsonl"
    secret_file = root / "pii.key"
    secret_file.write_text("a-test-secret-of-32-characters!!", encoding="utf-8")
    people = customers()
    sources = {"a": root / "tickets_a.jsonl", "b": root / "tickets_b.jsonl"}
    write_jsonl(sources["a"], tickets([people["c1"], people["c2"]], 6))
    write_jsonl(sources["b"], tickets([people["c3"]], 6))
    write_jsonl(root / "heldout.jsonl", colour_conversations(4, seed=3))
    runs = {}
    for name in ("a", "b"):
        gate = {"require": ["tuned.exact_match >= 0.99"]} if name == "a" else None
        recipe = governed_recipe(root / f"recipe_{name}.yaml", {
            "model": {"path": str(tiny_llama), "dtype": "fp32"},
            "data": {"train": f"data_{name}/train.jsonl", "max_length": 512},
            "train": {"max_steps": 2, "micro_batch_size": 4, "precision": "fp32", "tracking": "none",
                      "log_every": 1},
            "output_dir": f"run_{name}",
            "prepare": {"sources": [{"path": sources[name].name}], "output_dir": f"data_{name}", "workers": 1,
                        "pii": {"secret_file": secret_file.name}, "dedup": {"exact": False, "near": False},
                        "split": {"train": 1.0, "val": 0.0, "test": 0.0, "group_key": "customer_id"}},
            "eval": {"data": "heldout.jsonl", "metrics": ["exact_match"], "bootstrap": 100,
                     "generation": {"max_new_tokens": 4}, "forgetting": {"enabled": False},
                     "memorisation": {"enabled": False}},
            **({"gate": gate} if gate else {}),
        }, ledger)
        loaded = load_recipe(recipe)
        prepare(loaded.prepare, root, show_progress=False, governance=loaded.governance)
        runs[name] = train_from_recipe(loaded).output_dir
    evaluate_run(runs["a"])
    results = export_run(runs["a"], ["adapter"], verify=False, no_gate=True)
    return Pipeline(root, ledger, secret_file, people, sources, runs, results[0].folder)
