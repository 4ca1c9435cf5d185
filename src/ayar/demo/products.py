"""Synthetic e-commerce products for the offline demo (structured output task).

Each record is an OpenAI-messages conversation: the user gives a product title
and a short description, the assistant answers with one line of JSON,
``{"category": ..., "tags": [...]}``. The task is built to be learnable by a
tiny model in minutes:

- the category is decided by the product noun in the title; every noun belongs
  to exactly one category (``data/products.yaml``);
- the tags are exactly the attribute and colour phrases found in the user text,
  in the order they appear, in Turkish lower case (``tr_lower``).

Everything is deterministic from the seed (a private ``random.Random``), and the
vocabulary lives in ``data/products.yaml``.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

from ayar.demo.common import MAX_TRIES, balanced_rounds, load_data, tr_capitalize, tr_lower, tr_upper
from ayar.demo.support import support_stream
from ayar.fsutil import atomic_write


def tr_title(text: str) -> str:
    """Capitalise the first letter of every word, Turkish-aware; the rest is kept (``BPA``)."""
    return " ".join(tr_upper(w[:1]) + w[1:] for w in text.split(" "))


def categories() -> list[str]:
    """The category labels, in the order of the data file."""
    return list(load_data("products")["categories"])


def shared_nouns(category: str) -> list[str]:
    """The nouns several categories share that ``category`` may use (in data-file order)."""
    return [noun for noun, owners in load_data("products")["shared_nouns"].items() if category in owners]


def system_prompt() -> str:
    """The instruction every product conversation starts with; it names the allowed categories."""
    return ("Ürünün kategorisini ve etiketlerini JSON olarak ver. Kategori şunlardan biri olmalı: "
            + ", ".join(categories()) + ".")


def attribute_phrases(category: str) -> list[str]:
    """Every attribute of ``category`` as written in descriptions (groups of alternatives flattened)."""
    items = load_data("products")["categories"][category]["attributes"]
    return [phrase for item in items for phrase in ([item] if isinstance(item, str) else item)]


def _join(phrases: list[str]) -> str:
    """Turkish list: ``a``, ``a ve b``, ``a, b ve c``."""
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " ve " + phrases[-1]


def _product(rng: random.Random, category: str) -> tuple[str, dict[str, Any]]:
    """Draw one product of ``category``. Returns (user text, answer dict)."""
    vocab = load_data("products")
    cat = vocab["categories"][category]
    noun, brand, use = rng.choice(cat["nouns"]), rng.choice(cat["brands"]), rng.choice(cat["uses"])
    shared = shared_nouns(category)
    # A marketplace product: shared brand and noun, every attribute in the description.
    is_shared = bool(shared) and rng.random() < vocab["shared_share"]
    if is_shared:
        noun, brand = rng.choice(shared), rng.choice(vocab["shared_brands"])
    n_tags = rng.randint(2, 4)
    colour = rng.choice(vocab["colours"]) if cat["colours"] and rng.random() < 0.5 else None
    # An attribute item is a phrase or a list of alternatives that exclude each other.
    items = rng.sample(cat["attributes"], n_tags - (colour is not None))
    attrs = [item if isinstance(item, str) else rng.choice(item) for item in items]
    n_title = 0 if is_shared else rng.randint(0, min(2, len(attrs)))
    colour_in_title = colour is not None and rng.random() < 0.5
    title_phrases = attrs[:n_title] + ([colour] if colour_in_title else [])
    desc_phrases = attrs[n_title:]

    template = rng.choice(vocab["title_templates"])
    title = template.format(brand=brand, attrs=tr_title(" ".join(title_phrases)), noun=tr_title(noun))
    title = " ".join(title.split())  # an empty {attrs} leaves a double space

    template = rng.choice(vocab["description_templates"] if desc_phrases else vocab["plain_templates"])
    attrs_text = _join(desc_phrases) if desc_phrases else ""
    sentences = [tr_capitalize(template.format(attrs=attrs_text, noun=noun, brand=brand, use=use))]
    if colour is not None and not colour_in_title:
        sentences.append(tr_capitalize(rng.choice(vocab["colour_templates"]).format(colour=colour)))
        desc_phrases = desc_phrases + [colour]
    if rng.random() < 0.3:
        sentences.append(rng.choice(vocab["notes"]))

    user = f"Ürün: {title}\nAçıklama: {' '.join(sentences)}"
    answer = {"category": category, "tags": [tr_lower(p) for p in title_phrases + desc_phrases]}
    return user, answer


def _record(user: str, answer: dict[str, Any]) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": system_prompt()},
            {"role": "user", "content": user},
            {"role": "assistant", "content": json.dumps(answer, ensure_ascii=False)},
        ]
    }


def product_records(n: int, seed: int) -> list[dict[str, Any]]:
    """Generate ``n`` product conversations with distinct user texts.

    Categories come in shuffled rounds, so any contiguous slice is near-balanced.
    The same seed gives the same records; a longer list extends a shorter one.

    Args:
        n: number of records (>= 0).
        seed: seed of the private random generator.

    Returns:
        ``{"messages": [system, user, assistant]}`` dicts; the assistant content is
        ``{"category": ..., "tags": [...]}`` as JSON (``ensure_ascii=False``).

    Raises:
        ValueError: ``n`` is negative, or the vocabulary cannot give ``n`` distinct texts.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    seen: set[str] = set()
    records: list[dict[str, Any]] = []
    for category in balanced_rounds(rng, categories()):
        if len(records) == n:
            break
        for _ in range(MAX_TRIES):
            user, answer = _product(rng, category)
            if user not in seen:
                break
        else:
            raise ValueError(f"could not draw {n} distinct products; the vocabulary is too small")
        seen.add(user)
        records.append(_record(user, answer))
    return records


def product_splits(
    n_train: int = 2000, n_val: int = 200, n_test: int = 200, seed: int = 0
) -> dict[str, list[dict[str, Any]]]:
    """Train/val/test product records; no user text appears twice, within or across splits.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``; each split is category-balanced
        to within one record per category round.
    """
    records = product_records(n_train + n_val + n_test, seed)
    return {
        "train": records[:n_train],
        "val": records[n_train : n_train + n_val],
        "test": records[n_train + n_val :],
    }


def title_keyword_accuracy(train: list[dict[str, Any]], test: list[dict[str, Any]]) -> float:
    """Accuracy of a keyword-only classifier: each title word votes for the category it most often had in
    ``train``; ties and unknown words fall back to the most common category. What a rule on the title
    (no reading of the description) can reach on ``test``.
    """
    from collections import Counter, defaultdict

    def words(record: dict[str, Any]) -> list[str]:
        title = record["messages"][1]["content"].split("\n")[0].removeprefix("Ürün: ")
        return re.findall(r"\w+", tr_lower(title))

    def label(record: dict[str, Any]) -> str:
        return json.loads(record["messages"][2]["content"])["category"]

    seen: dict[str, Counter] = defaultdict(Counter)
    for record in train:
        for word in set(words(record)):
            seen[word][label(record)] += 1
    overall = Counter(label(r) for r in train).most_common(1)[0][0]
    hits = 0
    for record in test:
        votes: Counter = Counter()
        for word in set(words(record)):
            if seen[word]:
                best, count = seen[word].most_common(1)[0]
                votes[best] += count / sum(seen[word].values())
        hits += (votes.most_common(1)[0][0] if votes else overall) == label(record)
    return hits / len(test)


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Write one JSON object per line (UTF-8, Turkish letters kept), atomically.

    The lines go to a temporary file in the same folder, which then replaces
    ``path``; a reader never sees a half-written file. Missing folders are created.
    """
    with atomic_write(path) as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")


def _shoptr_capitalize(rng: random.Random) -> str:
    vocab = load_data("products")
    category = rng.choice(categories())
    cat = vocab["categories"][category]
    template = rng.choice(vocab["corpus_templates"])
    return tr_capitalize(
        template.format(
            category=category,
            noun=rng.choice(cat["nouns"]),
            brand=rng.choice(cat["brands"]),
            attr=rng.choice(attribute_phrases(category)),
            use=rng.choice(cat["uses"]),
        )
    )


def corpus_texts(seed: int, n: int, exclude: Collection[str] = ()) -> list[str]:
    """Plain Turkish documents for training the demo tokenizer and pretraining the tiny model.

    The mix, in shuffled order: 40% product texts (the same ``Ürün: …\\nAçıklama: …``
    form as a user turn), 15% JSON answer lines of *other* products (the model
    learns the JSON pieces, not the product→answer mapping), 20% general shop
    sentences, 25% support texts (customer questions and replies in both the
    formal and the informal register, from :mod:`ayar.demo.support`).

    Args:
        seed: seed of the private random generator; use a seed different from
            the splits' (the generators are independent, but this keeps it obvious).
        n: number of documents.
        exclude: documents never to return, e.g. the held-out split's user texts,
            prompts and replies, so pretraining does not see the test set.

    Returns:
        ``n`` strings.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    exclude = set(exclude)
    rng = random.Random(f"corpus:{seed}")
    counts = {"product": n * 40 // 100, "answer": n * 15 // 100, "general": n * 20 // 100}
    counts["support"] = n - sum(counts.values())
    cats = balanced_rounds(rng, categories())
    support = support_stream(seed=rng.randrange(2**32))

    def draw(kind: str) -> Iterator[str]:
        while True:
            if kind == "product":
                yield _product(rng, next(cats))[0]
            elif kind == "answer":
                yield json.dumps(_product(rng, next(cats))[1], ensure_ascii=False)
            elif kind == "general":
                yield _shoptr_capitalize(rng)
            else:
                pair = next(support)
                yield from (pair["prompt"], pair["chosen"], pair["rejected"])

    docs: list[str] = []
    for kind, count in counts.items():
        stream = (d for d in draw(kind) if d not in exclude)
        docs.extend(next(stream) for _ in range(count))
    rng.shuffle(docs)
    return docs
