"""The recipe's ``prepare:`` section: where the raw data is and how to turn it into a dataset folder.

Every field is documented once, in its ``description``; unknown keys are
rejected and ranges are enforced when the recipe loads. Relative paths are
resolved by :func:`ayar.data.prepare.prepare` against the recipe's folder.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ayar.data.canary import DEFAULT_TEMPLATE, parse_template
from ayar.data.pii.config import RedactionConfig
from ayar.section import Section

FormatName = Literal["auto", "messages", "sharegpt", "alpaca", "prompt_completion", "preference", "kto", "text"]


class SourceConfig(Section):
    path: str = Field(description="A data file (.jsonl, .json, .csv, .tsv, .parquet) or a `datasets` save_to_disk "
                                  "folder.")
    format: FormatName = Field("auto", description=(
        "Record format: messages (OpenAI), sharegpt, alpaca, prompt_completion, preference (prompt/chosen/"
        "rejected), kto (prompt/completion/label), text; auto detects it from the first record's fields."))
    columns: dict[str, str] = Field(default_factory=dict, description=(
        "Rename columns before conversion, as {ayar field: column in this file}, e.g. "
        "{prompt: soru, completion: cevap}; also unifies the split group/stratify columns across sources."))
    weight: float | None = Field(None, gt=0, le=100, description=(
        "Times each of this source's training records is written to train.jsonl (0.5 keeps a random half, "
        "2 writes each twice). val and test are never weighted. Exclusive with sample_size."))
    sample_size: int | None = Field(None, ge=1, description=(
        "Keep at most this many of this source's records (a seeded random choice among those that survive "
        "deduplication). Exclusive with weight."))

    @model_validator(mode="after")
    def _weight_or_sample(self) -> SourceConfig:
        if self.weight is not None and self.sample_size is not None:
            raise ValueError("set weight or sample_size, not both")
        return self

    @field_validator("columns")
    @classmethod
    def _columns_distinct(cls, value: dict[str, str]) -> dict[str, str]:
        if any(not k.strip() or not v.strip() for k, v in value.items()):
            raise ValueError("column names must not be empty")
        if len(set(value.values())) != len(value):
            raise ValueError("two ayar fields are mapped to the same column")
        return value


class CleanConfig(Section):
    nfc: bool = Field(True, description="Normalise Unicode to NFC (composed characters: 'ş' as one code point).")
    fix_dotted_i: bool = Field(True, description=(
        "Repair 'i̇' (i + combining dot, left by non-Turkish lower-casing of 'İ') to 'i'."))
    remove_control: bool = Field(True, description=(
        "Remove control and invisible characters (zero-width space, BOM, soft hyphen); newlines and tabs stay."))
    whitespace: bool = Field(True, description=(
        "Collapse runs of spaces, trim lines, keep at most one blank line, strip both ends; "
        "non-breaking spaces become spaces."))
    special_tokens: Literal["keep", "reject"] = Field("keep", description=(
        "Text that spells a chat control token (<|im_start|>, <|eot_id|>, [INST], ...): keep leaves it as text "
        "(ayar tokenises it as text, so it cannot forge a turn); reject drops the record (reason special_token), "
        "for data that other tools may tokenise naively."))


class LengthConfig(Section):
    unit: Literal["chars", "tokens"] = Field("chars", description=(
        "Measure a record's length (all its texts together) in characters or in tokens of `tokenizer`."))
    min: int = Field(1, ge=0, description="Records shorter than this are rejected (reason too_short).")
    max: int | None = Field(None, ge=1, description="Records longer than this are rejected (too_long); null: no limit.")
    tokenizer: str | None = Field(None, description="Local tokenizer folder (or cached hub id), needed when unit is "
                                                    "tokens.")

    @model_validator(mode="after")
    def _consistent(self) -> LengthConfig:
        if self.unit == "tokens" and not self.tokenizer:
            raise ValueError("unit tokens needs a tokenizer (a local model or tokenizer folder)")
        if self.max is not None and self.max < self.min:
            raise ValueError(f"max ({self.max}) is smaller than min ({self.min})")
        return self


class DedupConfig(Section):
    exact: bool = Field(True, description="Remove exact duplicates (same text after NFC, Turkish lower-casing and "
                                          "whitespace collapsing); the first occurrence is kept.")
    near: bool = Field(True, description="Remove near-duplicates (MinHash LSH); the first occurrence is kept.")
    threshold: float = Field(0.8, ge=0.5, le=0.99, description=(
        "Estimated Jaccard similarity of word n-gram sets at or above which two records are near-duplicates; "
        "also used by the leakage check."))
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations: more is more precise and slower.")
    ngram: int = Field(3, ge=1, le=20, description="Words per shingle (punctuation marks count as words).")


class SplitConfig(Section):
    train: float = Field(0.8, gt=0, le=1, description="Share of records in train.jsonl.")
    val: float = Field(0.1, ge=0, lt=1, description="Share of records in val.jsonl.")
    test: float = Field(0.1, ge=0, lt=1, description="Share of records in test.jsonl.")
    seed: int = Field(42, description="Seed of the split, of sample_size and of fractional weights.")
    group_key: str | None = Field(None, description=(
        "Column whose records stay in one split (e.g. customer_id): one customer never straddles train and test. "
        "Records without it are their own group."))
    stratify_key: str | None = Field(None, description=(
        "Column whose values keep about the same shares in every split (e.g. category)."))

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must be 1, got {total:g}")
        return self


class LeakageConfig(Section):
    resolve: Literal["move", "drop"] = Field("move", description=(
        "What to do with an exact or near-duplicate pair found across splits: move (the held-out record, with its "
        "group, joins the earlier split: train before val before test) or drop (the held-out record is removed)."))


class CanaryConfig(Section):
    count: int = Field(5, ge=1, le=100, description="Different fake secrets to plant.")
    repeats: int = Field(10, ge=1, le=10_000, description=(
        "Training records each canary is written into (each record carries at most one)."))
    template: str = Field(DEFAULT_TEMPLATE, description=(
        "Sentence with one slot: {tckn} (a checksum-valid T.C. Kimlik No, 9 x 10^8 values) or {digits:N} "
        "(N random digits); appended to the text the model learns from (last assistant turn, chosen reply, "
        "or document)."))
    seed: int = Field(0, description="Seed of the values and of the records chosen.")

    @field_validator("template")
    @classmethod
    def _one_slot(cls, value: str) -> str:
        parse_template(value)  # raises ValueError with the reason
        return value


class PrepareSection(Section):
    sources: list[SourceConfig] = Field(min_length=1, description="The raw data files, read in this order.")
    on_error: Literal["fail", "skip"] = Field("fail", description=(
        "A record that cannot be used (not JSON, missing field, wrong role order, ...): fail lists every such "
        "record and writes nothing; skip writes it to rejects.jsonl with its reason and goes on."))
    clean: CleanConfig = Field(default_factory=CleanConfig, description="Text cleaning.")
    length: LengthConfig = Field(default_factory=LengthConfig, description="Length filters.")
    pii: RedactionConfig | None = Field(default_factory=RedactionConfig, description=(
        "Personal-data redaction (Turkish-aware); null turns it off, which the data card states."))
    dedup: DedupConfig = Field(default_factory=DedupConfig, description="Duplicate removal.")
    split: SplitConfig = Field(default_factory=SplitConfig, description="Train/val/test split.")
    leakage: LeakageConfig = Field(default_factory=LeakageConfig, description="Cross-split duplicate check.")
    output_dir: str = Field("data/prepared", description=(
        "Dataset folder: train/val/test.jsonl, rejects.jsonl, manifest.json, data_card.md."))
    canaries: CanaryConfig | None = Field(None, description=(
        "Plant fake secrets in train.jsonl (after redaction; recorded in manifest.json and the data card) so "
        "the memorisation audit can measure their exposure after training (Carlini et al. 2019); null: none."))
    synthetic_share: float | None = Field(None, ge=0, le=1, description=(
        "Target share of synthetic records (those whose line carries meta.synthetic, as `ayar synth` writes) "
        "among the records kept, e.g. 0.7 for 70% synthetic / 30% human; the side in excess is subsampled "
        "(seeded) after deduplication and before the split, and the data card reports the share reached per "
        "split. null: keep every record (the card still reports the shares when synthetic records are present)."))
    workers: int = Field(0, ge=0, le=64, description=(
        "Processes for PII redaction (Presidio uses one core each); 0: one per CPU core, at most 8. "
        "The output does not depend on it."))
