"""The ``eval:`` section: what to evaluate, with which metrics, against which baseline and judge,
and the settings of the forgetting guard and the memorisation audit.

This module is schema only (the recipe imports it); the code these settings drive
lives in :mod:`ayar.eval.compare`, :mod:`ayar.eval.forgetting` and :mod:`ayar.eval.memorisation`.

Every field is documented once, in its ``description``; unknown keys are
rejected and ranges are enforced when the section is built. Relative paths are
resolved by :meth:`EvalSection.resolved` against a folder the caller names (the
recipe's folder, or the working directory for ``ayar eval --set``).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from ayar.errors import RecipeError
from ayar.section import Section

DEFAULT_METRICS = ["exact_match", "bleu", "chrf", "rouge_l", "perplexity"]


class EndpointConfig(Section):
    base_url: str = Field(description="OpenAI-compatible API root, e.g. https://api.openai.com/v1 or "
                                      "http://localhost:8000/v1 (vLLM, `ayar serve`).")
    model: str = Field(description="Model name sent with each request.")
    api_key_env: str | None = Field("OPENAI_API_KEY", description=(
        "Environment variable that holds the API key (the key itself never goes in a recipe); "
        "null for servers that need none."))
    timeout: float = Field(60.0, gt=0, description="Seconds to wait for one response.")
    max_retries: int = Field(4, ge=0, le=20, description=(
        "Retries of a request that failed with a 5xx, 429, timeout or connection error; the wait doubles "
        "each time from retry_delay."))
    retry_delay: float = Field(1.0, ge=0, description="Seconds before the first retry.")
    concurrency: int = Field(4, ge=1, le=64, description="Requests in flight at once.")


class JudgeConfig(EndpointConfig):
    rubric: str | None = Field(None, description=(
        "Text file with the judge prompt; $question, $reference, $answer_a and $answer_b are replaced, and the "
        "judge must end with a line `VERDICT: A`, `VERDICT: B` or `VERDICT: TIE`. null: the bundled rubric."))
    include_reference: bool = Field(True, description="Show the judge the reference answer.")
    temperature: float = Field(0.0, ge=0, le=2, description="Judge sampling temperature.")
    max_tokens: int = Field(512, gt=0, description="Longest judge response, in tokens.")


class GenerationConfig(Section):
    max_new_tokens: int = Field(256, gt=0, description="Longest reply, in tokens; generation also stops at the end "
                                                       "of the turn.")
    temperature: float = Field(0.0, ge=0, le=2, description="0: greedy decoding; above 0: sampling.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling threshold (with temperature > 0).")
    seed: int = Field(0, description="Seed of sampling, so sampled replies are reproducible.")
    batch_size: int = Field(16, gt=0, description="Prompts generated together (left-padded).")
    stop: list[str] = Field(default_factory=list, max_length=8, description=(
        "Strings that end a reply (it is cut before the first one), for both models, e.g. [\"\\n\"] for "
        "one-line answers: a fair baseline for a base model that does not stop at the end of its turn."))


class ForgettingSection(Section):
    """``eval.forgetting``: settings of the forgetting guard."""

    enabled: bool = Field(True, description="Compare base and tuned perplexity on general text.")
    texts: str | None = Field(None, description=(
        "General text: a .txt file (documents separated by blank lines) or JSONL with `text`; null: the bundled "
        "Turkish and English passages."))
    threshold: float = Field(0.10, gt=0, le=10, description=(
        "Flag the run when the tuned model's perplexity is worse than the base's by more than this share "
        "(0.10: 10%)."))
    max_length: int = Field(512, ge=8, le=32_768, description="Texts are scored in windows of this many tokens.")
    batch_size: int = Field(8, ge=1, le=1024, description="Windows per forward pass.")


class MemorisationSection(Section):
    """``eval.memorisation``: settings of the memorisation audit."""

    enabled: bool = Field(True, description="Run the memorisation audit after the comparison.")
    canaries: str | None = Field(None, description=(
        "The prepare manifest.json that records the planted canaries; null: manifest.json next to data.train, "
        "when it records some (no canaries: exposure is not measured)."))
    heldout: str | None = Field(None, description=(
        "Records the model never trained on, for membership inference; null: data.val, else test.jsonl next to "
        "data.train."))
    candidates: int = Field(1000, ge=10, le=1_000_000, description=(
        "Random candidate values each canary is ranked against (exposures above log2 of this are "
        "extrapolated)."))
    controls: int = Field(5, ge=0, le=100, description=(
        "Fresh values never planted, scored like canaries: their exposure shows the chance level."))
    max_records: int = Field(200, ge=2, le=100_000, description=(
        "Training and held-out records scored (a seeded sample of each)."))
    min_k: float = Field(20.0, gt=0, le=100, description="k of Min-K% Prob, in percent of a record's tokens.")
    prefix_tokens: int = Field(32, ge=1, le=4096, description="Regurgitation: tokens of a record given as prompt.")
    continuation_tokens: int = Field(32, ge=1, le=4096, description=(
        "Regurgitation: tokens that must follow exactly (records shorter than prefix + continuation are skipped)."))
    max_length: int = Field(512, ge=8, le=32_768, description="Longest text scored, in tokens (longer: truncated).")
    batch_size: int = Field(8, ge=1, le=1024, description="Texts per forward pass.")
    seed: int = Field(0, description="Seed of the record samples, canary candidates and controls.")


Target = str | EndpointConfig


class EvalSection(Section):
    data: str | None = Field(None, description=(
        "JSONL of conversations ({\"messages\": [...]}); the last assistant turn is the reference, everything "
        "before it the prompt. null: test.jsonl next to the recipe's data.train (the prepared test split)."))
    n: int | None = Field(None, gt=0, description="Evaluate only the first n examples; null: all.")
    metrics: list[str] = Field(default_factory=lambda: list(DEFAULT_METRICS), description=(
        "Metrics by name: perplexity, exact_match, bleu, chrf, rouge_l, json (parse rate and per-field "
        "accuracy), json_schema, classification."))
    schema_file: str | None = Field(None, description=(
        "JSON Schema file the replies must satisfy (metric json_schema)."))
    json_fields: list[str] | None = Field(None, description=(
        "Fields compared by the json metric; null: every top-level key of the reference objects."))
    label_field: str | None = Field(None, description=(
        "classification: the label is this field of the reply parsed as JSON."))
    label_regex: str | None = Field(None, description=(
        "classification: the label is the first match of this regex (its first group when it has one)."))
    custom_metrics: list[str] = Field(default_factory=list, description=(
        "Your own metrics as module:function; fn(prediction: str, reference: str, example: dict) -> float, "
        "averaged over examples (the function's `higher_is_better` attribute, default true, sets the direction)."))
    system_prompt: str | None = Field(None, description=(
        "System prompt given to both models, replacing any in the data; null keeps the data's own."))
    few_shot: int = Field(0, ge=0, le=64, description=(
        "Worked examples from the training data prepended to the baseline's prompts as user/assistant turns "
        "(the prompt-engineering baseline); the tuned model never gets them."))
    few_shot_data: str | None = Field(None, description=(
        "JSONL the few-shot examples are drawn from (seeded); null: the recipe's data.train."))
    generation: GenerationConfig = Field(default_factory=GenerationConfig, description="Decoding settings.")
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = Field("auto", description=(
        "Weight dtype of local models; auto: bf16 where the hardware supports it, else fp32."))
    baseline: Target = Field("base", description=(
        "What the tuned model is compared with: base (the recipe's base model), none, a model / adapter / run "
        "folder, or an endpoint {base_url, model, api_key_env}."))
    tuned: Target | None = Field(None, description=(
        "The model under test: null for the run itself (base + adapter, or the full fine-tune), a merged model "
        "folder, or an endpoint {base_url, model, api_key_env}."))
    judge: JudgeConfig | None = Field(None, description=(
        "LLM-as-judge: pairwise base vs tuned through an OpenAI-compatible endpoint, both answer orders."))
    bootstrap: int = Field(1000, ge=100, le=100_000, description="Paired bootstrap resamples for the 95% intervals.")
    seed: int = Field(0, description="Seed of the bootstrap and of the few-shot choice.")
    forgetting: ForgettingSection = Field(default_factory=ForgettingSection, description=(
        "Forgetting guard: general-text perplexity of base vs tuned, flagged above a threshold."))
    memorisation: MemorisationSection = Field(default_factory=MemorisationSection, description=(
        "Memorisation audit: canary exposure, membership inference (loss, Min-K%) and verbatim regurgitation."))

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, value: list[str]) -> list[str]:
        from ayar.eval.metrics import METRICS

        for name in value:
            if name not in METRICS:
                match = difflib.get_close_matches(name, list(METRICS), n=1, cutoff=0.6)
                hint = f"; did you mean {match[0]!r}?" if match else ""
                raise ValueError(f"unknown metric {name!r}{hint}; available: {', '.join(METRICS)}")
        if len(set(value)) != len(value):
            raise ValueError("a metric is listed twice")
        return value

    @field_validator("custom_metrics")
    @classmethod
    def _module_function(cls, value: list[str]) -> list[str]:
        for spec in value:
            module, sep, function = spec.partition(":")
            if not sep or not module.strip() or not function.strip():
                raise ValueError(f"{spec!r} is not module:function, e.g. my_metrics:politeness")
        return value

    @model_validator(mode="after")
    def _needs(self) -> EvalSection:
        if "json_schema" in self.metrics and not self.schema_file:
            raise ValueError("metric json_schema needs schema_file: a JSON Schema file")
        if "classification" in self.metrics and not (self.label_field or self.label_regex):
            raise ValueError("metric classification needs label_field or label_regex")
        if self.label_field and self.label_regex:
            raise ValueError("set label_field or label_regex, not both")
        if self.judge is not None and self.baseline == "none":
            raise ValueError("the judge compares two models; set a baseline other than none")
        return self

    def resolved(self, base_dir: str | Path) -> EvalSection:
        """A copy with relative file paths made absolute against ``base_dir``."""

        def resolve(p: str | None) -> str | None:
            if p is None:
                return None
            q = Path(p).expanduser()
            return str(q if q.is_absolute() else (Path(base_dir) / q).resolve())

        def resolve_target(t: Target | None) -> Target | None:
            if isinstance(t, str) and t not in ("base", "none") and (Path(base_dir) / t).exists():
                return resolve(t)
            return t

        update: dict[str, Any] = {name: resolve(getattr(self, name))
                                  for name in ("data", "schema_file", "few_shot_data")}
        update["baseline"] = resolve_target(self.baseline)
        update["tuned"] = resolve_target(self.tuned)
        if self.judge is not None and self.judge.rubric:
            update["judge"] = self.judge.model_copy(update={"rubric": resolve(self.judge.rubric)})
        update["forgetting"] = self.forgetting.model_copy(update={"texts": resolve(self.forgetting.texts)})
        update["memorisation"] = self.memorisation.model_copy(update={
            "canaries": resolve(self.memorisation.canaries), "heldout": resolve(self.memorisation.heldout)})
        return self.model_copy(update=update)


def eval_section_from_dict(raw: dict[str, Any] | None, source: str = "eval") -> EvalSection:
    """Validate an ``eval:`` mapping, reporting every problem at once.

    Raises:
        RecipeError: one line per problem, each with its dotted path under ``eval``.
    """
    if raw is not None and not isinstance(raw, dict):
        raise RecipeError(source, ["eval: must be a mapping of settings"])
    try:
        return EvalSection.model_validate(raw or {})
    except ValidationError as exc:
        raise RecipeError(source, [_describe(err) for err in exc.errors()]) from None


def _describe(err: dict[str, Any]) -> str:
    loc = ".".join(["eval", *(str(p) for p in err["loc"])])
    if err["type"] == "extra_forbidden":
        section: type[BaseModel] = EvalSection
        for part in err["loc"][:-1]:
            field = section.model_fields.get(str(part))
            inner = getattr(field, "annotation", None)
            section = next((a for a in (inner, *getattr(inner, "__args__", ())) if isinstance(a, type)
                            and issubclass(a, BaseModel)), section)
        names = list(section.model_fields)
        match = difflib.get_close_matches(str(err["loc"][-1]), names, n=1, cutoff=0.6)
        hint = f"; did you mean {match[0]!r}?" if match else ""
        return f"{loc}: unknown key{hint}; allowed: {', '.join(names)}"
    message = str(err["msg"]).removeprefix("Value error, ")
    return f"{loc}: {message}"
