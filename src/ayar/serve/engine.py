"""One worker thread that generates for every request, fed by a bounded queue.

The model (and which adapter is active in it) is shared, so generation runs on
a single worker thread, one request at a time; requests wait in a queue of at
most ``max_queue`` jobs and are refused with 503 at once when it is full,
rather than piling up until clients time out. The worker selects the request's
adapter and generates under :attr:`ModelHost.lock`, the lock that also guards
loading and unloading adapters, so no request can run on another's adapter.

The worker talks back to the request's event loop through a per-job asyncio
queue of events, posted with ``call_soon_threadsafe``:

- ``("start", served_model)`` once the request's model is selected,
- ``("text", delta)`` for each piece of final text,
- ``("end", finish_reason, completion_tokens)`` when generation ends,
- ``("error", OpenAIError)`` instead, when the request fails.

A job whose client has gone (``cancelled``) is dropped from the queue: it no
longer holds a place (a full queue first sheds such jobs before refusing a new
one) and the worker never starts it.

Generation itself is ``model.generate`` (so greedy and seeded sampling give
what offline generation gives); a ``StoppingCriteria`` sees each new token,
feeds it to :class:`~ayar.serve.text.TextStream` and stops at a stop sequence
or when the client has gone away.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from ayar.chat.templates import end_of_turn_ids
from ayar.serve.models import ModelHost
from ayar.serve.protocol import OpenAIError, internal_error
from ayar.serve.text import TextStream

log = logging.getLogger("ayar.serve")
_STOP = object()  # tells the worker to exit once the jobs before it are done


@dataclass
class Job:
    """One generation request, as the worker needs it."""

    request_id: str
    model: str  # the requested name: the base, an adapter or an A/B route
    prompt_ids: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    seed: int
    stops: list[str]
    logit_bias: dict[int, float]
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)  # set when the client has gone

    def emit(self, event: tuple) -> None:
        """Post an event to the request's event loop (from the worker thread)."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the loop has closed: nobody is listening any more
            self.cancelled.set()


class _Watch(StoppingCriteria):
    """Feeds each new token to the job's text stream; stops at its end or when the client left."""

    def __init__(self, job: Job, stream: TextStream):
        self.job, self.stream = job, stream

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        delta = self.stream.add(int(input_ids[0, -1]))  # input_ids: (1, prompt + generated so far)
        if delta:
            self.job.emit(("text", delta))
        done = self.stream.finish_reason is not None or self.job.cancelled.is_set()
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


class JobQueue:
    """A bounded FIFO of jobs that forgets the ones whose client has gone."""

    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self._jobs: deque = deque()
        self._ready = threading.Condition()

    def _shed(self) -> None:
        self._jobs = deque(j for j in self._jobs if j is _STOP or not j.cancelled.is_set())

    def put(self, job, *, force: bool = False) -> bool:
        """Append ``job``; False (nothing queued) when the queue is full of live jobs, unless ``force``."""
        with self._ready:
            if len(self._jobs) >= self.maxsize:
                self._shed()
            if len(self._jobs) >= self.maxsize and not force:
                return False
            self._jobs.append(job)
            self._ready.notify()
            return True

    def get(self):
        """The oldest live job (or the stop marker), waiting for one."""
        with self._ready:
            while True:
                self._shed()
                if self._jobs:
                    return self._jobs.popleft()
                self._ready.wait(timeout=0.5)  # wakes to shed jobs cancelled meanwhile

    def size(self) -> int:
        with self._ready:
            return sum(1 for j in self._jobs if j is not _STOP and not j.cancelled.is_set())


class Engine:
    """The worker thread and its bounded queue.

    Args:
        host: the served models.
        max_queue: most requests that may wait (the one being generated not counted).
    """

    def __init__(self, host: ModelHost, max_queue: int):
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self.host = host
        self.end_ids = end_of_turn_ids(host.tokenizer)
        self._queue = JobQueue(max_queue)
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="ayar-serve-worker", daemon=True)
        # Called on the worker with each job before it runs; tests use it to hold the worker still.
        self.before_job: Callable[[Job], None] | None = None

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue a job, or refuse it at once.

        Raises:
            OpenAIError: 503 when the queue is full or the server is shutting down.
        """
        if self._closing:
            raise OpenAIError(503, "the server is shutting down", type="server_error", code="shutting_down")
        if not self._queue.put(job):
            raise OpenAIError(503, f"the server is busy: {self._queue.maxsize} requests are already waiting; "
                              "retry later", type="server_error", code="queue_full")

    def pending(self) -> int:
        """Requests waiting for the worker (those whose client has gone not counted)."""
        return self._queue.size()

    def close(self) -> None:
        """Refuse new jobs, finish those accepted, then stop the worker (blocks until it has)."""
        self._closing = True
        if self._thread.is_alive():
            self._queue.put(_STOP, force=True)
            self._thread.join()

    def _run(self) -> None:
        while (job := self._queue.get()) is not _STOP:
            self._serve(job)

    def _serve(self, job: Job) -> None:
        if job.cancelled.is_set():
            return
        try:
            if self.before_job is not None:
                self.before_job(job)
            with self.host.lock, self.host.select(job.model, job.request_id) as (model, served):
                job.emit(("start", served))
                stream = TextStream(self.host.tokenizer, self.end_ids, job.stops)
                self._generate(model, job, stream)
                job.emit(("end", stream.finish_reason or "length", len(stream.ids)))
        except OpenAIError as exc:
            job.emit(("error", exc))
        except Exception:  # a bug or a device failure: answer a generic 500, keep serving
            log.exception("generation failed for %s", job.request_id)
            job.emit(("error", internal_error()))

    def _generate(self, model, job: Job, stream: TextStream) -> None:
        device = next(model.parameters()).device
        ids = torch.tensor([job.prompt_ids], device=device)  # (1, prompt)
        # The same settings offline generation (ayar.eval.generate) uses, so results agree with it.
        sampling = {"do_sample": True, "temperature": job.temperature, "top_p": job.top_p} if job.temperature > 0 \
            else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        if job.logit_bias:
            sampling["sequence_bias"] = {(token,): bias for token, bias in job.logit_bias.items()}
        torch.manual_seed(job.seed)
        with torch.no_grad():
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=job.max_tokens,
                           eos_token_id=self.end_ids, pad_token_id=self.host.tokenizer.pad_token_id,
                           stopping_criteria=StoppingCriteriaList([_Watch(job, stream)]), **sampling)
        if stream.finish_reason is None:
            delta = stream.flush()
            if delta:
                job.emit(("text", delta))
