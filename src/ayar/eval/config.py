"""The ``eval:`` section: what to evaluate, with which metrics, against which baseline and judge.

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
from ayar.eval.forgetting import ForgettingSection
from ayar.eval.memorisation import MemorisationSection
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
