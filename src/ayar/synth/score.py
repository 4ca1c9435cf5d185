"""Scoring replies one at a time: a judge's rubric score, a verifier, or a reward rule.

Scorers take the prompt messages and a reply and return a number, higher is better, or None
when no score could be had (a judge request that failed, a response without a score).

- judge: the judge model reads the rubric (``$question``, ``$answer``) and ends with ``SCORE: N``,
  N from 1 to 10 (the last such line counts);
- json_schema: 1.0 when the reply is one JSON object valid under the schema, else 0.0;
- regex: 1.0 when the pattern is found in the reply, else 0.0;
- python: a function ``(prompt messages, reply) -> float`` from a file: a reward rule, or a verifier
  returning True / False (scored 1.0 / 0.0).
"""

from __future__ import annotations

import importlib.util
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from ayar.data.readers import resolve_path
from ayar.errors import AyarError
from ayar.eval.endpoint import ChatEndpoint, EndpointError
from ayar.eval.judge import render_question
from ayar.eval.structured import parse_json_object
from ayar.synth.config import JudgeScoreConfig, PairsConfig
from ayar.synth.tasks import load_template, schema_validator

_SCORE = re.compile(r"^[\s*_#>`]*SCORE\s*:\s*[*_`]*\s*(\d+(?:\.\d+)?)", re.IGNORECASE | re.MULTILINE)

Scorer = Callable[[Sequence[Sequence[dict]], Sequence[str]], list[float | None]]  # prompts, replies -> scores


def parse_score(text: str) -> float | None:
    """The last ``SCORE: N`` line's N when 1 <= N <= 10, else None."""
    found = _SCORE.findall(text)
    if not found:
        return None
    value = float(found[-1])
    return value if 1 <= value <= 10 else None


def judge_scores(config: JudgeScoreConfig, endpoint: ChatEndpoint, base_dir: Path, prompts: Sequence[Sequence[dict]],
                 replies: Sequence[str]) -> list[float | None]:
    """The judge's score of each (prompt, reply); None where the request failed or held no score."""
    rubric = load_template(config.rubric, "score_rubric.txt", ("$question", "$answer"), "synth.quality.judge.rubric",
                           base_dir)
    requests = [([{"role": "user", "content": rubric.safe_substitute(question=render_question(list(p)), answer=r)}],
                 {"temperature": config.temperature, "max_tokens": config.max_tokens})
                for p, r in zip(prompts, replies, strict=True)]
    done = endpoint.complete_requests(requests)
    return [None if isinstance(d, EndpointError) else parse_score(d.text) for d in done]


def verifier(config: PairsConfig, base_dir: Path) -> Scorer:
    """The json_schema, regex or python scorer of ``synth.pairs``.

    Raises:
        AyarError: the schema, pattern or function cannot be loaded.
    """
    if config.scorer == "json_schema":
        validator = schema_validator(config.schema_file, base_dir, "synth.pairs.schema_file")

        def by_schema(reply: str) -> float:
            value = parse_json_object(reply)
            return float(value is not None and validator.is_valid(value))

        return lambda prompts, replies: [by_schema(r) for r in replies]
    if config.scorer == "regex":
        try:
            pattern = re.compile(config.regex)
        except re.error as exc:
            raise AyarError(f"synth.pairs.regex: not a valid regular expression: {exc}") from None
        return lambda prompts, replies: [float(pattern.search(r) is not None) for r in replies]
    function = load_function(config.function, base_dir)

    def by_function(prompts, replies) -> list[float | None]:
        out = []
        for k, (p, r) in enumerate(zip(prompts, replies, strict=True)):
            try:
                value = function(list(p), r)
            except Exception as exc:  # the user's code: say where, not what it was given (it may be personal)
                raise AyarError(f"synth.pairs.function: {config.function} raised {type(exc).__name__} on reply "
                                f"{k + 1}; fix the function (run it on that reply by hand)") from None
            if isinstance(value, bool):  # a verifier: pass or fail
                value = float(value)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise AyarError(f"synth.pairs.function: {config.function} returned {type(value).__name__} "
                                f"{value!r}; it must return a finite number")
            out.append(float(value))
        return out

    return by_function


def load_function(spec: str, base_dir: Path) -> Callable:
    """``FILE.py:NAME`` loaded from the file (relative to the recipe).

    Raises:
        AyarError: a malformed spec, a missing file, or no such callable.
    """
    file, sep, name = spec.rpartition(":")
    if not sep or not file.endswith(".py") or not name.isidentifier():
        raise AyarError(f"synth.pairs.function: {spec!r} must be FILE.py:NAME, e.g. rewards.py:formal")
    path = resolve_path(file, base_dir)
    if not path.is_file():
        raise AyarError(f"synth.pairs.function: {path} does not exist")
    module_spec = importlib.util.spec_from_file_location(f"ayar_reward_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        raise AyarError(f"synth.pairs.function: {path} cannot be loaded: {type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise AyarError(f"synth.pairs.function: {path} defines no function {name}")
    return function
