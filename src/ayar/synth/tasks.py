"""The four synth tasks: which requests each sends to the teacher, and which record each reply becomes.

A task is a small record in a plain dict (:data:`TASKS`): ``jobs`` turns the recipe's input into
:class:`Job` s (the messages to send, and what the reply will be attached to), ``build`` turns a
reply into an output record or raises :class:`Rejected` with a reason code.

- answer: ``input`` prompts (``messages`` ending in a user turn, or ``prompt``; a trailing assistant
  turn is dropped, the teacher's reply replaces it) -> ``{"messages": prompt + [teacher reply]}``;
- generate: per topic, ``per_topic`` requests showing ``shots`` seed examples; the reply is one JSON
  object ``{"prompt", "response"}`` -> ``{"messages": [user, assistant]}``;
- label: the teacher reads ``input_field`` and answers JSON valid under the schema ->
  ``{"messages": [user text, assistant JSON], <field>: value}``;
- rewrite: the last assistant turn (or ``text``) is rewritten -> the same record with the new text.

Output records are in a form ``prepare`` reads (``messages`` or ``text``).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from ayar.data.formats import RecordError, _message_list, _prompt, convert, detect_format
from ayar.data.readers import container_of, iter_records, location, resolve_path
from ayar.errors import AyarError
from ayar.eval.structured import parse_json_lenient
from ayar.synth.config import SynthSection

MAX_LISTED = 20


class Rejected(Exception):
    """A reply that cannot become a record: ``code`` (e.g. ``schema_invalid``) and a value-free ``detail``."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass
class Job:
    """One request to the teacher and what its reply completes."""

    where: str  # "prompts.jsonl:12" or "generate: topic 2, example 5"
    messages: list[dict]  # sent to the teacher
    params: dict[str, Any] = field(default_factory=dict)  # per-request API parameters (a seed)
    context: dict[str, Any] = field(default_factory=dict)  # what build() needs: the prompt, the record
    index: int = 0  # position among the run's jobs (rejects are listed in this order)


@dataclass(frozen=True)
class Task:
    jobs: Callable[[SynthSection, Path], list[Job]]
    build: Callable[[SynthSection, Job, str, Any], dict]  # (section, job, reply, validator) -> record


def load_template(path: str | None, bundled: str, needed: tuple[str, ...], key: str, base_dir: Path) -> Template:
    """A prompt template from ``path`` (relative to the recipe) or the bundled file.

    Raises:
        AyarError: unreadable, or a placeholder is missing.
    """
    try:
        text = (resolve_path(path, base_dir).read_text(encoding="utf-8") if path else
                resources.files("ayar.synth").joinpath(bundled).read_text(encoding="utf-8"))
    except OSError as exc:
        raise AyarError(f"{key}: cannot read {path}: {exc.strerror}") from None
    missing = [p for p in needed if p not in text]
    if missing:
        raise AyarError(f"{key}: {path} lacks {', '.join(missing)}; add the placeholder(s) to the template")
    return Template(text)


def read_input(path: str, base_dir: Path, limit: int | None, parse: Callable[[dict], Any]) -> list[tuple[str, Any]]:
    """``(location, parse(raw))`` for each record of ``path``; every unusable record is listed at once.

    Raises:
        AyarError: records ``parse`` refuses (with their locations and reasons), or no record at all.
    """
    resolved = resolve_path(path, base_dir)
    out, problems = [], []
    for number, raw in iter_records(resolved):
        where = location(path, container_of(resolved), number)
        try:
            if isinstance(raw, RecordError):
                raise raw
            out.append((where, parse(raw)))
        except RecordError as exc:
            problems.append(f"{where}: {exc.detail}")
        if limit is not None and len(out) >= limit:
            break
    if problems:
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise AyarError(f"synth.input: {len(problems)} unusable record(s); nothing was sent (fix or remove "
                        "them):\n  " + "\n  ".join(problems[:MAX_LISTED]) + more)
    if not out:
        raise AyarError(f"synth.input: {path} holds no records")
    return out


def with_system(section: SynthSection, messages: list[dict]) -> list[dict]:
    if section.system and not any(m["role"] == "system" for m in messages):
        return [{"role": "system", "content": section.system}, *messages]
    return messages


# ----------------------------------------------------------------------------- answer


def prompt_of(raw: dict) -> list[dict]:
    """The prompt messages of a record: ``messages`` less a trailing assistant turn, or ``prompt``.

    Raises:
        RecordError: neither field, or the messages do not end with a user turn.
    """
    if "messages" in raw:
        messages = _message_list(raw["messages"], "messages")
        if messages and messages[-1]["role"] == "assistant":
            messages = messages[:-1]
        if not messages or messages[-1]["role"] != "user":
            raise RecordError("role_order", "`messages` must end with a user turn (or a user turn and its reply)")
        return messages
    if "prompt" in raw:
        return _prompt(raw["prompt"], "prompt")
    raise RecordError("missing_field", "needs `messages` or `prompt`")


def _answer_jobs(section: SynthSection, base_dir: Path) -> list[Job]:
    rows = read_input(section.input, base_dir, section.limit, prompt_of)
    return [Job(where, with_system(section, prompt), context={"prompt": prompt}) for where, prompt in rows]


def _answer_build(section: SynthSection, job: Job, reply: str, validator: Any) -> dict:
    return {"messages": [*job.context["prompt"], {"role": "assistant", "content": reply.strip()}]}


# ----------------------------------------------------------------------------- generate

_LANGUAGE_LINE = {"tr": "Write the example in Turkish (Türkçe yaz).", "any": ""}


def _seed_text(raw: dict) -> str:
    """A seed example shown to the teacher as JSON {"prompt", "response"}."""
    fmt = detect_format(raw)
    if fmt not in ("messages", "sharegpt", "alpaca", "prompt_completion"):
        raise RecordError("unknown_format", "a seed example needs `messages`, `prompt`/`completion`, "
                          "`instruction`/`output` or `conversations`")
    messages = convert(raw, fmt, "seeds", 0).messages
    user = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    return json.dumps({"prompt": user, "response": messages[-1]["content"]}, ensure_ascii=False)


def _generate_jobs(section: SynthSection, base_dir: Path) -> list[Job]:
    g = section.generate
    seeds = [text for _, text in read_input(g.seeds, base_dir, None, _seed_text)]
    template = load_template(g.prompt_template, "generate_prompt.txt", ("$topic", "$examples"),
                             "synth.generate.prompt_template", base_dir)
    jobs = []
    for t, topic in enumerate(g.topics):
        for n in range(g.per_topic):
            rng = random.Random(f"{section.teacher.seed}:{t}:{n}")
            shown = rng.sample(seeds, min(g.shots, len(seeds)))
            text = template.safe_substitute(topic=topic, examples="\n".join(shown), language=_LANGUAGE_LINE[g.language])
            # the per-request seed makes each request (and its cache key) distinct
            jobs.append(Job(f"generate: topic {t + 1}, example {n + 1}",
                            with_system(section, [{"role": "user", "content": text}]),
                            params={"seed": section.teacher.seed + len(jobs)}))
            if section.limit is not None and len(jobs) >= section.limit:
                return jobs
    return jobs


def _generate_build(section: SynthSection, job: Job, reply: str, validator: Any) -> dict:
    value = parse_json_lenient(reply)
    if value is None:
        raise Rejected("not_json", "the reply holds no JSON object")
    problems = [k for k in ("prompt", "response") if not isinstance(value.get(k), str) or not value[k].strip()]
    if problems:
        raise Rejected("schema_invalid", f"the JSON object lacks a non-empty string {', '.join(problems)}")
    return {"messages": [{"role": "user", "content": value["prompt"].strip()},
                         {"role": "assistant", "content": value["response"].strip()}]}


# ----------------------------------------------------------------------------- label


def _label_jobs(section: SynthSection, base_dir: Path) -> list[Job]:
    lab = section.label

    def parse(raw: dict) -> dict:
        value = raw.get(lab.input_field)
        if not isinstance(value, str) or not value.strip():
            raise RecordError("missing_field", f"needs a non-empty string `{lab.input_field}` (synth.label."
                                               "input_field)")
        return raw

    schema = json.dumps(load_schema(lab.schema_file, base_dir, "synth.label.schema_file"), ensure_ascii=False)
    template = load_template(None, "label_prompt.txt", (), "synth.label", base_dir)
    jobs = []
    for where, raw in read_input(section.input, base_dir, section.limit, parse):
        text = template.safe_substitute(instruction=lab.instruction, schema=schema, text=raw[lab.input_field])
        jobs.append(Job(where, with_system(section, [{"role": "user", "content": text}]), context={"raw": raw}))
    return jobs


def _label_build(section: SynthSection, job: Job, reply: str, validator: Any) -> dict:
    lab = section.label
    value = parse_json_lenient(reply)
    if value is None:
        raise Rejected("not_json", "the reply holds no JSON object")
    errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        at = "/".join(str(p) for p in first.absolute_path) or "(root)"
        # the validator's own message may quote the value; name the place and the rule only
        raise Rejected("schema_invalid", f"{len(errors)} schema violation(s); first at {at}: fails "
                                         f"`{first.validator}`")
    text = job.context["raw"][lab.input_field]
    answer = json.dumps(value, ensure_ascii=False)
    return {"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": answer}],
            lab.field: value}


def load_schema(path: str, base_dir: Path, key: str):
    """The JSON Schema at ``path``, checked against its draft's meta-schema.

    Raises:
        AyarError: unreadable, not JSON, or not a valid schema.
    """
    import jsonschema

    resolved = resolve_path(path, base_dir)
    try:
        schema = json.loads(resolved.read_text(encoding="utf-8"))
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except OSError as exc:
        raise AyarError(f"{key}: cannot read {resolved}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise AyarError(f"{key}: {resolved} is not JSON (line {exc.lineno}: {exc.msg})") from None
    except jsonschema.SchemaError as exc:
        raise AyarError(f"{key}: {resolved} is not a valid JSON Schema: {exc.message}") from None
    return schema


def schema_validator(path: str, base_dir: Path, key: str):
    """A jsonschema validator for the schema at ``path`` (see :func:`load_schema`)."""
    import jsonschema

    schema = load_schema(path, base_dir, key)
    return jsonschema.validators.validator_for(schema)(schema)


# ----------------------------------------------------------------------------- rewrite


def _rewrite_jobs(section: SynthSection, base_dir: Path) -> list[Job]:
    rw = section.rewrite

    def parse(raw: dict) -> tuple[dict, str]:
        if rw.target == "text":
            value = raw.get("text")
            if not isinstance(value, str) or not value.strip():
                raise RecordError("missing_field", "needs a non-empty string `text` (rewrite.target: text)")
            return {"text": value}, value
        messages = _message_list(raw.get("messages"), "messages") if "messages" in raw else None
        if not messages or messages[-1]["role"] != "assistant":
            raise RecordError("role_order", "needs `messages` ending with an assistant turn (rewrite.target: "
                                            "last_assistant)")
        return {"messages": messages}, messages[-1]["content"]

    template = load_template(None, "rewrite_prompt.txt", (), "synth.rewrite", base_dir)
    jobs = []
    for where, (record, text) in read_input(section.input, base_dir, section.limit, parse):
        request = template.safe_substitute(instruction=rw.instruction, text=text)
        jobs.append(Job(where, with_system(section, [{"role": "user", "content": request}]),
                        context={"record": record}))
    return jobs


def _rewrite_build(section: SynthSection, job: Job, reply: str, validator: Any) -> dict:
    record, text = job.context["record"], reply.strip()
    if "text" in record:
        return {"text": text}
    messages = [dict(m) for m in record["messages"]]
    messages[-1]["content"] = text
    return {"messages": messages}


TASKS: dict[str, Task] = {
    "answer": Task(_answer_jobs, _answer_build),
    "generate": Task(_generate_jobs, _generate_build),
    "label": Task(_label_jobs, _label_build),
    "rewrite": Task(_rewrite_jobs, _rewrite_build),
}
