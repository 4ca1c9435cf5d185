"""The OpenAI wire format: request schemas, error bodies and response objects.

Requests are validated by pydantic models that mirror the OpenAI API's fields
and ranges (temperature in [0, 2], top_p in (0, 1], at most four stop strings).
Parameters that OpenAI defines but ``ayar serve`` does not implement are accepted
only at their neutral value, so a client that sends ``presence_penalty: 0`` works
while one that relies on a penalty gets a clear 400 instead of a silent no-op.
Every error leaves the server as OpenAI's error object
``{"error": {"message", "type", "param", "code"}}``.

Every string and list has a length limit, and numbers a range that the code
behind them can take (a seed fits in 64 bits, a ``logit_bias`` key is ASCII
digits), so unexpected values are answered 400 naming the parameter, not 500.
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Any, Literal

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


# How pydantic names the members of a union in an error's location (``stop.str``, ``stop.constrained-str``).
UNION_TAGS = frozenset({"str", "list[str]", "list[TextPart]", "constrained-str", "list[constrained-str]"})


def validation_error(exc: ValidationError | Any) -> OpenAIError:
    """A 400 naming every invalid field, from a pydantic or FastAPI validation error."""
    problems, first = [], None
    for err in exc.errors():
        loc = [str(p) for p in err["loc"] if p != "body"]
        # Union members appear in the location (``stop.str``); the field path is what users recognise.
        field = ".".join(p for p in loc if p not in UNION_TAGS)
        first = first or field or None
        message = err["msg"].removeprefix("Value error, ")  # pydantic's prefix for our own checks
        problems.append(f"{field}: {message}" if field else message)
    return OpenAIError(400, "; ".join(problems), param=first, code="invalid_value")


MAX_TEXT = 1 << 20  # characters in one message, prompt or stop sequence (the body is capped at 2 MiB anyway)
MAX_MESSAGES = 4096
MAX_PARTS = 256
MAX_BIAS = 300  # OpenAI's own limit on logit_bias entries
MAX_ID = 10**9  # larger than any vocabulary; keeps int() of a key cheap
TOKEN_ID = re.compile(r"[0-9]{1,10}")  # ASCII digits only: str.isdigit() also accepts "²" and "٣"


Text = Annotated[str, Field(max_length=MAX_TEXT)]
Stops = Annotated[list[Text], Field(max_length=16)]  # over 4 is refused with its own message below


def internal_error() -> OpenAIError:
    """The 500 a client sees for a failure it did not cause: no internal detail (that goes to the log)."""
    return OpenAIError(500, "The server had an error while processing your request; the details are in its log",
                       type="server_error", code="internal_error")


class _Request(BaseModel):
    """Fields shared by chat and text completions."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(max_length=256)
    max_tokens: int | None = Field(None, ge=1, le=MAX_ID)
    temperature: float = Field(1.0, ge=0.0, le=2.0, allow_inf_nan=False)
    top_p: float = Field(1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    n: int = 1
    stop: Text | Stops | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)  # what torch.manual_seed takes
    stream: bool = False
    stream_options: StreamOptions | None = None
    logit_bias: dict[str, float] | None = Field(None, max_length=MAX_BIAS)
    user: str | None = Field(None, max_length=256)

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
        if any(len(s) > 1000 for s in stops):
            raise ValueError("a stop sequence may have at most 1000 characters")
        return stops

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, bias: dict[str, float] | None) -> dict[str, float] | None:
        for token, value in (bias or {}).items():
            if not TOKEN_ID.fullmatch(token) or int(token) > MAX_ID:
                raise ValueError(f"keys are token ids written in ASCII digits, got {token[:20]!r}")
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
    text: str = Field(max_length=MAX_TEXT)


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: Text | Annotated[list[TextPart], Field(max_length=MAX_PARTS)]
    name: str | None = Field(None, max_length=256)

    def as_record(self) -> dict:
        """The message as the chat template expects it: a role and plain text."""
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class ChatRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_ID)

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Request):
    prompt: Text | Annotated[list[Text], Field(max_length=16)]
    max_tokens: int | None = Field(16, ge=1, le=MAX_ID)  # OpenAI's default for text completions

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
