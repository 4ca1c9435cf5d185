"""The recipe's ``synth:`` section: a teacher model writes, labels or rewrites data (``ayar synth``), or
samples and scores replies into preference pairs (``ayar synth pairs``).

This module is schema only (the recipe imports it); the code these settings drive lives in
:mod:`ayar.synth.run` and :mod:`ayar.synth.pairs`. Every field is documented once, in its
``description``; unknown keys are rejected and ranges enforced when the recipe loads. Relative
paths are resolved against the recipe's folder.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ayar.data.prepare_config import DedupConfig
from ayar.eval.config import EndpointConfig
from ayar.section import Section

TASKS = ("answer", "generate", "label", "rewrite")


class PriceConfig(Section):
    input_per_million: float = Field(ge=0, description="Price of one million prompt tokens (in `currency`).")
    output_per_million: float = Field(ge=0, description="Price of one million completion tokens.")
    currency: str = Field("USD", description="Currency of the two prices.")


class TeacherConfig(EndpointConfig):
    requests_per_minute: int | None = Field(None, ge=1, description=(
        "Most requests started in any 60 seconds (the provider's RPM limit); null: no limit."))
    tokens_per_minute: int | None = Field(None, ge=1, description=(
        "Most tokens (prompt + completion) in any 60 seconds (the provider's TPM limit); null: no limit."))
    temperature: float = Field(0.7, ge=0, le=2, description="Sampling temperature of the teacher.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling threshold.")
    max_tokens: int = Field(512, gt=0, le=65_536, description="Longest teacher reply, in tokens.")
    seed: int = Field(0, description="Seed sent with each request (servers that honour it reproduce replies).")
    price: PriceConfig | None = Field(None, description=(
        "Price of this model's tokens; null: looked up by model name in ayar's bundled price table "
        "(synth/prices.yaml); a model in neither gets no cost estimate."))


class GenerateConfig(Section):
    seeds: str = Field(description=(
        "Example records the teacher imitates (JSONL with `messages` or `prompt`/`completion`, any file "
        "`prepare` reads)."))
    topics: list[str] = Field(min_length=1, description="Topics; each gets `per_topic` new examples.")
    per_topic: int = Field(10, ge=1, le=100_000, description="New examples requested per topic.")
    shots: int = Field(3, ge=0, le=20, description="Seed examples shown in each request (a seeded choice).")
    language: Literal["tr", "any"] = Field("tr", description=(
        "tr: ask for Turkish and reject replies that are not Turkish; any: no language asked or checked."))
    prompt_template: str | None = Field(None, description=(
        "Text file of the request; $topic, $examples and $language are replaced, and the reply must be one "
        "JSON object {\"prompt\": ..., \"response\": ...}. null: the bundled template."))


class LabelConfig(Section):
    field: str = Field("label", description="Name of the field the teacher fills.")
    input_field: str = Field("text", description="Field of each input record the teacher reads.")
    schema_file: str = Field(description="JSON Schema file the teacher's JSON must satisfy (any draft).")
    instruction: str = Field(description="What to extract or decide, e.g. 'Ürünün kategorisini ve etiketlerini "
                                         "çıkar.'; the schema is shown with it.")


class RewriteConfig(Section):
    instruction: str = Field(description=(
        "How to rewrite, e.g. 'Metni resmi ve kibar bir dille, siz hitabıyla yeniden yaz; anlamı koru.'"))
    target: Literal["last_assistant", "text"] = Field("last_assistant", description=(
        "What is rewritten: the last assistant turn of each conversation, or the `text` of text records."))


class JudgeScoreConfig(EndpointConfig):
    rubric: str | None = Field(None, description=(
        "Text file of the scoring prompt; $question and $answer are replaced, and the judge must end with a "
        "line `SCORE: N` (1-10). null: the bundled rubric."))
    threshold: float = Field(6.0, ge=1, le=10, description="Replies scored below this are rejected (pairs: unused).")
    temperature: float = Field(0.0, ge=0, le=2, description="Judge sampling temperature.")
    max_tokens: int = Field(256, gt=0, description="Longest judge response, in tokens.")


class SynthDedupConfig(DedupConfig):
    against: list[str] = Field(default_factory=list, description=(
        "Existing data files (any format `prepare` reads) a synthetic record must not duplicate; the new "
        "records are also deduplicated among themselves."))


class QualityConfig(Section):
    min_chars: int = Field(1, ge=0, description="Replies shorter than this (characters) are rejected (too_short).")
    max_chars: int | None = Field(None, ge=1, description="Replies longer than this are rejected (too_long).")
    language: Literal["tr", "any"] = Field("any", description=(
        "tr: reject replies that are not Turkish (a check on Turkish function words and letters); any: no check. "
        "generate.language tr implies tr."))
    dedup: SynthDedupConfig = Field(default_factory=SynthDedupConfig, description=(
        "Exact and MinHash near-duplicate removal, as in `prepare`, among the new records and against "
        "existing data."))
    judge: JudgeScoreConfig | None = Field(None, description=(
        "Score each accepted record with a judge model; below judge.threshold: rejected (low_score)."))


class PrivacyConfig(Section):
    pii: Literal["refuse", "redact", "drop"] = Field("refuse", description=(
        "Prompts bound for a teacher that is not on this machine are scanned for personal data first. refuse: "
        "send nothing when any is found (unless governance.allow_external_pii); redact: mask it in the prompts "
        "before sending; drop: leave those prompts out (rejects: pii_in_prompt). A teacher on loopback is not "
        "scanned."))
    redact_outputs: bool = Field(True, description=(
        "Mask personal data in the teacher's replies (Turkish-aware redactor), like any other data."))


class PairsConfig(Section):
    prompts: str = Field(description="Prompts (JSONL with `messages` ending in a user turn, or `prompt`).")
    sampler: str = Field("teacher", description=(
        "Who writes the k replies: teacher (synth.teacher), or a run folder / model folder (the student, "
        "generating locally)."))
    k: int = Field(4, ge=2, le=64, description="Replies sampled per prompt.")
    temperature: float = Field(0.9, gt=0, le=2, description="Sampling temperature of the k replies.")
    max_tokens: int = Field(256, gt=0, le=65_536, description="Longest sampled reply, in tokens.")
    scorer: Literal["judge", "json_schema", "regex", "python"] = Field("judge", description=(
        "How a reply is scored: judge (synth.quality.judge's model and rubric, 1-10), json_schema (1 if it "
        "is a JSON object valid under schema_file, else 0), regex (1 if `regex` matches, else 0), python "
        "(`function` returns a number: a reward rule)."))
    schema_file: str | None = Field(None, description="scorer json_schema: the JSON Schema file.")
    regex: str | None = Field(None, description="scorer regex: a Python regular expression searched in the reply.")
    function: str | None = Field(None, description=(
        "scorer python: FILE.py:NAME, a function (prompt messages, reply) -> a number, higher is better (a reward "
        "rule), or True / False (a verifier: 1 / 0)."))
    min_gap: float = Field(1.0, ge=0, description=(
        "Keep a pair only when best score - worst score >= min_gap (and > 0): ties teach nothing."))
    output: str = Field("pairs.jsonl", description="File name of the pairs, inside synth.output_dir.")

    @model_validator(mode="after")
    def _scorer_settings(self) -> PairsConfig:
        needs = {"json_schema": "schema_file", "regex": "regex", "python": "function"}.get(self.scorer)
        if needs and not getattr(self, needs):
            raise ValueError(f"scorer {self.scorer} needs `{needs}`")
        return self


class SynthSection(Section):
    teacher: TeacherConfig = Field(description="The teacher model: any OpenAI-compatible endpoint.")
    task: Literal["answer", "generate", "label", "rewrite"] | None = Field(None, description=(
        "answer: the teacher answers `input`'s prompts (sequence-level distillation); generate: new examples "
        "from seed examples and topics (self-instruct); label: the teacher fills a JSON field of each `input` "
        "record; rewrite: the teacher rewrites each record (e.g. informal -> formal register). null: none (a "
        "section for `ayar synth pairs` only)."))
    input: str | None = Field(None, description=(
        "Records to answer, label or rewrite (any file `prepare` reads; for answer: `messages` whose last "
        "turn is the user's, or `prompt`). Not used by generate."))
    system: str | None = Field(None, description="System prompt sent to the teacher with every request.")
    limit: int | None = Field(None, ge=1, description="Use only the first N input records (or N generate requests).")
    generate: GenerateConfig | None = Field(None, description="Settings of task generate.")
    label: LabelConfig | None = Field(None, description="Settings of task label.")
    rewrite: RewriteConfig | None = Field(None, description="Settings of task rewrite.")
    quality: QualityConfig = Field(default_factory=QualityConfig, description="Checks every reply must pass.")
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig, description="Personal data in and out.")
    pairs: PairsConfig | None = Field(None, description="Preference pairs from feedback (`ayar synth pairs`).")
    output_dir: str = Field("data/synth", description=(
        "Folder for synthetic.jsonl, rejects.jsonl, manifest.json and the request cache (cache.jsonl)."))
    cache: str | None = Field(None, description=(
        "Request cache (JSONL); null: cache.jsonl in output_dir. A re-run sends only requests not answered "
        "before, so an interrupted run resumes and a finished one costs nothing."))

    @model_validator(mode="after")
    def _task_settings(self) -> SynthSection:
        problems = []
        if self.task in ("generate", "label", "rewrite") and getattr(self, self.task) is None:
            problems.append(f"task {self.task} needs a `{self.task}:` section")
        if self.task in ("answer", "label", "rewrite") and self.input is None:
            problems.append(f"task {self.task} needs `input` (the records to {self.task})")
        for other in ("generate", "label", "rewrite"):
            if other != self.task and getattr(self, other) is not None:
                problems.append(f"section `{other}` is set but task is {self.task!r}; remove it or set task: {other}")
        if problems:
            raise ValueError("; ".join(problems))
        return self
