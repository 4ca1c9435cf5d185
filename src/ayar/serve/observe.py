"""What the server tells about itself: Prometheus metrics, and what a request leaves when it ends.

:class:`ServeMetrics` holds one Prometheus registry per app (``GET /metrics``):

- ``ayar_requests_total{model, served_by, outcome}``: requests that reached the queue;
  ``model`` is the name asked for (an A/B route, an adapter, the base), ``served_by`` the
  model that answered (the A/B arm; ``none`` when refused before one was chosen);
- ``ayar_request_latency_seconds`` and ``ayar_time_to_first_token_seconds`` histograms;
- ``ayar_prompt_tokens_total`` and ``ayar_completion_tokens_total``;
- ``ayar_queue_depth``: requests waiting for the worker, read when scraped;
- ``ayar_feedback_total{model, served_by, kind}``: feedback received (up, down, score, correction).

A :class:`Trace` follows one request from queueing to its last token; when it is
closed, it updates the metrics, remembers which model served the response (so
``POST /v1/feedback`` joins the right A/B arm) and hands the record to the
request log (:mod:`ayar.serve.request_log`), when there is one.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
REMEMBERED = 100_000  # responses whose serving model is kept for feedback (oldest forgotten first)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ServeMetrics:
    """The server's Prometheus metrics, in a registry of their own (never the process-wide default).

    Args:
        queue_depth: called at each scrape for the number of waiting requests.
    """

    def __init__(self, queue_depth: Callable[[], int]):
        self.registry = CollectorRegistry()
        served = ("model", "served_by")
        self.requests = Counter("ayar_requests", "Requests that reached the queue, by outcome "
                                "(ok, error, cancelled, rejected).", (*served, "outcome"), registry=self.registry)
        self.latency = Histogram("ayar_request_latency_seconds", "From queueing to the last token.", served,
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.ttft = Histogram("ayar_time_to_first_token_seconds", "From queueing to the first text.", served,
                              buckets=TTFT_BUCKETS, registry=self.registry)
        self.prompt_tokens = Counter("ayar_prompt_tokens", "Prompt tokens of answered requests.", served,
                                     registry=self.registry)
        self.completion_tokens = Counter("ayar_completion_tokens", "Generated tokens.", served,
                                         registry=self.registry)
        self.queue = Gauge("ayar_queue_depth", "Requests waiting for the worker.", registry=self.registry)
        self.queue.set_function(queue_depth)
        self.feedback = Counter("ayar_feedback", "Feedback received, by kind (up, down, score, correction).",
                                (*served, "kind"), registry=self.registry)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


@dataclass
class Served:
    """Which model answered a response, remembered for its feedback."""

    model: str  # asked for
    served_by: str
    route: str | None  # the A/B route, when ``model`` is one


@dataclass
class Trace:
    """One request, from queueing to its end; the worker's events are noted as they reach the event loop."""

    request_id: str
    model: str
    route: str | None
    prompt: list[dict] | str  # the messages, or a raw completion prompt
    n_prompt: int
    started: float = field(default_factory=time.monotonic)
    served_by: str = "none"
    first_text: float | None = None
    parts: list[str] = field(default_factory=list)
    closed: bool = False

    def text(self, delta: str) -> None:
        if self.first_text is None:
            self.first_text = time.monotonic()
        self.parts.append(delta)


class Observer:
    """Closes traces: metrics, the served-model memory for feedback, and the request log.

    Args:
        metrics: the app's metrics.
        log: a :class:`~ayar.serve.request_log.RequestLog`, or None when requests are not logged.
    """

    def __init__(self, metrics: ServeMetrics, log=None):
        self.metrics, self.log = metrics, log
        self._served: OrderedDict[str, Served] = OrderedDict()

    def close(self, trace: Trace, outcome: str, finish: str | None = None, n_completion: int = 0) -> None:
        """Record the end of ``trace`` once (later calls do nothing)."""
        if trace.closed:
            return
        trace.closed = True
        m, labels = self.metrics, (trace.model, trace.served_by)
        m.requests.labels(*labels, outcome).inc()
        if outcome != "ok":
            return
        now = time.monotonic()
        m.latency.labels(*labels).observe(now - trace.started)
        if trace.first_text is not None:
            m.ttft.labels(*labels).observe(trace.first_text - trace.started)
        m.prompt_tokens.labels(*labels).inc(trace.n_prompt)
        m.completion_tokens.labels(*labels).inc(n_completion)
        self._served[trace.request_id] = Served(trace.model, trace.served_by, trace.route)
        while len(self._served) > REMEMBERED:
            self._served.popitem(last=False)
        if self.log is not None:
            self.log.request({
                "id": trace.request_id, "model": trace.model, "served_by": trace.served_by, "route": trace.route,
                "prompt": trace.prompt, "reply": "".join(trace.parts), "finish_reason": finish,
                "prompt_tokens": trace.n_prompt, "completion_tokens": n_completion,
                "latency_s": round(now - trace.started, 4),
                "ttft_s": round(trace.first_text - trace.started, 4) if trace.first_text is not None else None,
            })

    def served(self, response_id: str) -> Served | None:
        """The model that answered ``response_id`` (None when unknown, or forgotten)."""
        return self._served.get(response_id)

    def feedback(self, served: Served, kinds: list[str]) -> None:
        for kind in kinds:
            self.metrics.feedback.labels(served.model, served.served_by, kind).inc()
