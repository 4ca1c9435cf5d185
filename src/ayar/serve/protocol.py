"""The OpenAI wire format: request schemas, error bodies and response objects.

Requests are validated by pydantic models that mirror the OpenAI API's fields
and ranges (temperature in [0, 2], top_p in (0, 1], at most four stop strings).
Parameters that OpenAI defines but ``ayar serve`` does not implement are accepted
only at their neutral value, so a client that sends ``presence_penalty: 0`` works
while one that relies on a penalty gets a clear 400 instead of a silent no-op.
Every error leaves the server as OpenAI's error object
``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# Parameters of the OpenAI API this server does not implement, with the value that means "off".
NEUTRAL = {
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "logprobs": (None, False),
    "top_logprobs": None,
    "tools": None,
    "tool_choice": None,
    "functions": None,
    "function_call": None,
    "response_format": None,
    "echo": False,
    "suffix": None,
    "best_of": (None, 1),
}


class OpenAIError(Exception):
    """An error answered as OpenAI's error object with an HTTP status."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def validation_error(exc: ValidationError | Any) -> OpenAIError:
    """A 400 naming every invalid field, from a pydantic or FastAPI validation error."""
    problems, first = [], None
    for err in exc.errors():
        loc = [str(p) for p in err["loc"] if p != "body"]
        # Union members appear in the location (``stop.str``); the field path is what users recognise.
        field = ".".join(p for p in loc if p not in {"str", "list[str]", "list[TextPart]"})
        first = first or field or None
        message = err["msg"].removeprefix("Value error, ")  # pydantic's prefix for our own checks
        problems.append(f"{field}: {message}" if field else message)
    return OpenAIError(400, "; ".join(problems), param=first, code="invalid_value")


class _Request(BaseModel):
    """Fields shared by chat and text completions."""

    model_config = ConfigDict(extra="forbid")

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = 1
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _neutral_only(cls, data: Any) -> Any:
        """Drop unimplemented OpenAI parameters sent at their neutral value; refuse any other value."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for key, neutral in NEUTRAL.items():
            if key in data:
                value = data.pop(key)
                allowed = neutral if isinstance(neutral, tuple) else (neutral,)
                if value not in allowed:
                    raise ValueError(f"{key} is not supported by ayar serve; leave it out")
        return data

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int) -> int:
        if n != 1:
            raise ValueError("only n=1 is supported; send several requests for several completions")
        return n

    @field_validator("stop")
    @classmethod
    def _stops(cls, stop: str | list[str] | None) -> list[str]:  # a single string becomes a list of one
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        if any(not s for s in stops):
            raise ValueError("stop sequences must not be empty")
        return stops

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, bias: dict[str, float] | None) -> dict[str, float] | None:
        for token, value in (bias or {}).items():
            if not token.isdigit():
                raise ValueError(f"keys are token ids, got {token!r}")
            if not -100 <= value <= 100:
                raise ValueError(f"bias for token {token} must be between -100 and 100")
        return bias

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def as_record(self) -> dict:
        """The message as the chat template expects it: a role and plain text."""
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class ChatRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Request):
    prompt: str | list[str]
    max_tokens: int | None = Field(16, ge=1)  # OpenAI's default for text completions

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, prompt: str | list[str]) -> str:
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise ValueError("send one prompt per request (n=1 only)")
            prompt = prompt[0]
        return prompt

    @property
    def token_limit(self) -> int | None:
        return self.max_tokens


_Request.model_rebuild()


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def chat_response(request_id: str, model: str, text: str, finish: str, n_prompt: int, n_completion: int) -> dict:
    return {"id": request_id, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish,
                         "logprobs": None}],
            "usage": usage(n_prompt, n_completion)}


def completion_response(request_id: str, model: str, text: str, finish: str, n_prompt: int,
                        n_completion: int) -> dict:
    return {"id": request_id, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
            "usage": usage(n_prompt, n_completion)}


def chat_chunk(request_id: str, model: str, delta: dict, finish: str | None = None) -> dict:
    return {"id": request_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}


def completion_chunk(request_id: str, model: str, text: str, finish: str | None = None) -> dict:
    return {"id": request_id, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}]}


def usage_chunk(request_id: str, model: str, obj: str, n_prompt: int, n_completion: int) -> dict:
    """The last chunk of a stream with ``stream_options.include_usage``: no choices, only usage."""
    return {"id": request_id, "object": obj, "created": int(time.time()), "model": model, "choices": [],
            "usage": usage(n_prompt, n_completion)}
