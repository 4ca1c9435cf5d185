"""``ayar serve``: an OpenAI-compatible HTTP server for a base model and its adapters.

Meant for testing and small deployments: one process, one worker thread, one
request generated at a time. Modules, in the order a request meets them:

- :mod:`ayar.serve.launch`: options → loaded model, adapters, A/B routes → uvicorn.
- :mod:`ayar.serve.policy`: who may listen where, and which folders the admin API may load.
- :mod:`ayar.serve.guard`: keys and the body cap, checked before any body is read.
- :mod:`ayar.serve.app`: the FastAPI routes, authentication, SSE streaming.
- :mod:`ayar.serve.protocol`: OpenAI request schemas, errors and response objects.
- :mod:`ayar.serve.engine`: the bounded queue and the worker that generates.
- :mod:`ayar.serve.models`: the base model, its adapters (peft) and A/B routes.
- :mod:`ayar.serve.text`: generated tokens → final text, with stop sequences.
- :mod:`ayar.serve.observe`: Prometheus metrics (``/metrics``) and what a finished request leaves behind.
- :mod:`ayar.serve.request_log`: the opt-in, PII-redacted request and feedback log, with retention.
- :mod:`ayar.serve.feedback`: reading that log back: ``ayar ab report`` and ``ayar ab export-data``.
"""
