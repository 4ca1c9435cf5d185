"""The Presidio analyzer for Turkish text and the :class:`Redactor` that applies operators.

The analyzer runs fully offline: its NLP engine is a blank spaCy Turkish
pipeline (``spacy.blank("tr")``: a tokenizer, no trained model, nothing to
download), built in memory when the analyzer is built (~0.1 s) rather than
shipped as a saved pipeline folder, and its registry holds only ayar's
recognizers (no Presidio defaults, several of which need a downloaded model).
Context words are handled by :class:`~ayar.data.pii.context.TurkishContextEnhancer`.
None of ayar's recognizers reads the spaCy tokens; the pipeline is there
because Presidio's ``AnalyzerEngine`` runs one, and it costs about a third of
the analysis time.

A text goes: analyzer -> overlapping results resolved (highest score, then
longest span wins) -> Presidio's ``AnonymizerEngine`` with one custom
operator per entity type -> redacted text and :class:`Finding` s. Findings
hold the entity type, spans and score, never the original value.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import Any

import regex as re
from presidio_analyzer import AnalyzerEngine, EntityRecognizer, RecognizerRegistry, RecognizerResult
from presidio_analyzer.nlp_engine import SlimSpacyNlpEngine
from presidio_anonymizer import AnonymizerEngine
from presidio_anonymizer.entities import OperatorConfig

from .address import AddressRecognizer
from .config import ENTITIES, RedactionConfig
from .context import TurkishContextEnhancer
from .health import Icd10Recognizer, PatientIdRecognizer, SgkNumberRecognizer
from .names import PersonNameRecognizer
from .operators import check_secret, hash_value, load_secret, mask, missing_secret_error, pseudonymize
from .recognizers import (
    LANGUAGE,
    CreditCardRecognizer,
    DateOfBirthRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    IpAddressRecognizer,
    LicensePlateRecognizer,
    PhoneRecognizer,
    TcknRecognizer,
    VknRecognizer,
)
from .vault import PseudonymVault

_MAY_HOLD_PII = re.compile(r"[\d\p{Lu}@:\s]")
NLP_RELOAD_EVERY = 200_000  # texts between two reloads of the blank spaCy pipeline


def turkish_recognizers() -> list[EntityRecognizer]:
    """One instance of every recognizer ayar registers, one per entity type in ``config.ENTITIES``."""
    return [TcknRecognizer(), VknRecognizer(), IbanRecognizer(), CreditCardRecognizer(), PhoneRecognizer(),
            EmailRecognizer(), IpAddressRecognizer(), LicensePlateRecognizer(), DateOfBirthRecognizer(),
            AddressRecognizer(), PersonNameRecognizer(), SgkNumberRecognizer(), PatientIdRecognizer(),
            Icd10Recognizer()]


def build_analyzer() -> AnalyzerEngine:
    """A Presidio ``AnalyzerEngine`` for Turkish with ayar's recognizers only; no download."""
    nlp_engine = SlimSpacyNlpEngine(supported_languages=[LANGUAGE], generic_tokenizer="blank", auto_download=False)
    nlp_engine.load()
    registry = RecognizerRegistry(recognizers=turkish_recognizers(), supported_languages=[LANGUAGE])
    return AnalyzerEngine(registry=registry, nlp_engine=nlp_engine, supported_languages=[LANGUAGE],
                          context_aware_enhancer=TurkishContextEnhancer())


@dataclass(frozen=True)
class Finding:
    """One redacted value: where it was, where its replacement is, never what it was.

    ``start``/``end`` index the original text, ``output_start``/``output_end`` the
    redacted text; ``field`` is the path inside a record ("messages[1].content").
    """

    entity_type: str
    start: int
    end: int
    output_start: int
    output_end: int
    score: float
    operator: str
    field: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RedactedRecord:
    """A record after redaction; ``record`` is None when an entity's operator is ``drop_record``."""

    record: dict | None
    findings: list[Finding]

    @property
    def dropped(self) -> bool:
        return self.record is None

    @property
    def changed(self) -> bool:
        return bool(self.findings)


FieldPath = tuple[str | int, ...]  # keys and list indices from the record's root to a string


def _field_name(path: FieldPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _parse_fields(fields: Sequence[str] | None) -> list[tuple[str, ...]] | None:
    # "messages[*].content" and "messages.content" both select every message's content.
    if fields is None:
        return None
    return [tuple(p for p in f.replace("[*]", "").split(".") if p) for f in fields]


def _leaves(value: Any, path: FieldPath, selector: tuple[str, ...] | None) -> Iterator[tuple[FieldPath, str]]:
    """(path, text) of every string under ``value`` that ``selector`` (remaining dotted keys) reaches.

    Integers are yielded as text too: a TCKN or phone number stored as a JSON number is still PII.
    """
    if isinstance(value, str):
        if not selector:
            yield path, value
    elif isinstance(value, int) and not isinstance(value, bool):
        if not selector:
            yield path, str(value)
    elif isinstance(value, dict):
        for key, child in value.items():
            if selector is None or not selector:
                yield from _leaves(child, path + (key,), selector)
            elif key == selector[0]:
                yield from _leaves(child, path + (key,), selector[1:])
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield from _leaves(child, path + (i,), selector)


def field_texts(record: dict) -> dict[str, str]:
    """Every string (and integer) of ``record`` by field name ("messages[1].content")."""
    return {_field_name(path): text for path, text in _leaves(record, (), None)}


def _replace_at(value: Any, path: FieldPath, new: str) -> Any:
    """A copy of ``value`` with the leaf at ``path`` replaced (containers along the path are copied)."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    copy = list(value) if isinstance(value, list) else dict(value)
    copy[head] = _replace_at(value[head], rest, new)
    return copy


def _resolve_overlaps(results: list[RecognizerResult]) -> list[RecognizerResult]:
    """Keep the best of overlapping results (higher score, then longer span, then earlier), by start."""
    kept: list[RecognizerResult] = []
    for r in sorted(results, key=lambda r: (-r.score, -(r.end - r.start), r.start)):
        if all(r.end <= k.start or r.start >= k.end for k in kept):
            kept.append(r)
    return sorted(kept, key=lambda r: r.start)


class Redactor:
    """Detect and replace Turkish PII in texts and records.

    Args:
        config: what to detect and which operator to apply (default: mask everything).
        secret: the pseudonymisation secret, for callers that already hold it; by default it
            is read from ``config.secret_file`` or the ``config.secret_env`` variable.
        analyzer: a prebuilt analyzer from :func:`build_analyzer` (building one takes ~0.1 s).

    Raises:
        AyarError: pseudonymize or hash is configured and there is no secret, or it is too short.
    """

    def __init__(self, config: RedactionConfig | None = None, *, secret: str | bytes | None = None,
                 analyzer: AnalyzerEngine | None = None):
        self.config = config or RedactionConfig()
        if isinstance(secret, str):
            secret = secret.encode("utf-8")
        if secret is not None:
            secret = check_secret(secret, "Redactor(secret=...)")
        elif self.config.needs_secret():
            secret = load_secret(self.config)
            if secret is None:
                raise missing_secret_error(self.config)
        self._secret = secret
        self._analyzer = analyzer or build_analyzer()
        self._anonymizer = AnonymizerEngine()
        self._operators = {e: OperatorConfig("custom", {"lambda": partial(self._replace, e)}) for e in ENTITIES}
        self.vault = PseudonymVault()
        self._texts_since_reload = 0

    def _replace(self, entity: str, value: str) -> str:
        operator = self.config.operator_for(entity)
        if operator in ("mask", "drop_record"):  # a dropped record's text is still masked
            return mask(entity)
        if operator == "hash":
            new = hash_value(self._secret, entity, value, self.config.hash_length)
        else:
            new = pseudonymize(self._secret, entity, value)
        if self.config.vault_path is not None:
            self.vault.add(entity, new, value)
        return new

    def redact_text(self, text: str) -> tuple[str, list[Finding]]:
        """Redact one text. Returns the new text and what was replaced (types and spans only)."""
        return self._redact_many([text], [None])[0]

    def redact_texts(self, texts: Sequence[str]) -> list[tuple[str, list[Finding]]]:
        """Redact many texts in one batch (the NLP pipeline runs once over all of them)."""
        return self._redact_many(list(texts), [None] * len(texts))

    def redact_record(self, record: dict, fields: Sequence[str] | None = None) -> RedactedRecord:
        """Redact the strings of ``record`` (all of them, or those under ``fields``).

        ``fields`` are dotted key paths; lists are walked through: "messages.content"
        (or "messages[*].content") selects the content of every message, "chosen" all
        strings under "chosen". Dict keys are never changed. The input is not modified.
        """
        return self.redact_records([record], fields)[0]

    def redact_records(self, records: Sequence[dict], fields: Sequence[str] | None = None) -> list[RedactedRecord]:
        """:meth:`redact_record` for a batch of records, analysed together."""
        selectors = _parse_fields(fields)
        leaves: list[tuple[int, FieldPath, str]] = []
        for index, record in enumerate(records):
            seen: set[FieldPath] = set()  # overlapping selectors ("messages", "messages.content")
            for selector in (selectors if selectors is not None else [None]):
                for path, text in _leaves(record, (), selector):
                    if path not in seen:
                        seen.add(path)
                        leaves.append((index, path, text))
        contexts = [[str(path[-1])] if path and isinstance(path[-1], str) else None for _, path, _ in leaves]
        redacted = self._redact_many([text for _, _, text in leaves], contexts)

        new_records: list[Any] = list(records)
        findings: list[list[Finding]] = [[] for _ in records]
        for (index, path, _), (new_text, found) in zip(leaves, redacted, strict=True):
            if not found:
                continue
            new_records[index] = _replace_at(new_records[index], path, new_text)
            name = _field_name(path)
            findings[index].extend(replace(f, field=name) for f in found)
        return [RedactedRecord(None if any(f.operator == "drop_record" for f in found) else record, found)
                for record, found in zip(new_records, findings, strict=True)]

    def _redact_many(self, texts: list[str], contexts: list[list[str] | None]) -> list[tuple[str, list[Finding]]]:
        out: list[tuple[str, list[Finding]]] = [(text, []) for text in texts]
        # Strings such as "user" or "assistant" (no digit, capital, space, "@" or ":") hold nothing
        # any recognizer can match: skip the NLP pipeline and the analyzer for them.
        todo = [i for i, text in enumerate(texts) if _MAY_HOLD_PII.search(text)]
        self._texts_since_reload += len(todo)
        if self._texts_since_reload > NLP_RELOAD_EVERY:
            # spaCy adds every new token (each phone number, IBAN, ...) to its vocabulary, which
            # grows without bound over a large file; a fresh blank pipeline starts it empty again.
            self._analyzer.nlp_engine.load()
            self._texts_since_reload = len(todo)
        nlp = self._analyzer.nlp_engine.process_batch([texts[i] for i in todo], LANGUAGE,
                                                      batch_size=max(1, len(todo)))
        for i, (text, artifacts) in zip(todo, nlp, strict=True):
            results = self._analyzer.analyze(text, LANGUAGE, entities=list(self.config.entities),
                                             nlp_artifacts=artifacts, context=contexts[i],
                                             score_threshold=self.config.score_threshold)
            out[i] = self._apply(text, _resolve_overlaps(results))
        return out

    def _apply(self, text: str, results: list[RecognizerResult]) -> tuple[str, list[Finding]]:
        if not results:
            return text, []
        engine_result = self._anonymizer.anonymize(text, results, operators=self._operators,
                                                   merge_entities_with_spaces=False)
        items = sorted(engine_result.items, key=lambda item: item.start)
        findings = [Finding(r.entity_type, r.start, r.end, item.start, item.end, round(r.score, 2),
                            self.config.operator_for(r.entity_type)) for r, item in zip(results, items, strict=True)]
        return engine_result.text, findings

    def save_vault(self) -> int:
        """Write the collected replacement -> original pairs to ``config.vault_path``; returns how many."""
        if self.config.vault_path is None or not len(self.vault):
            return 0
        self.vault.save(self.config.vault_path, self._secret)
        return len(self.vault)
