"""The external-call guard: no personal data leaves the machine in an evaluation's requests unless allowed.

Before :class:`~ayar.eval.endpoint.ChatEndpoint` sends a batch of conversations to a
server that is not on this machine (a host other than ``localhost``, ``127.0.0.0/8``
or ``::1``; names are not resolved, so a name that happens to point here counts as
external), every message is scanned with ayar's Turkish PII redactor. When anything
is found the batch is refused — nothing is sent — unless the run's recipe says
``governance.allow_external_pii: true``. Either way the ledger records what was
(or would have been) sent where: the destination, the number of requests and
messages, the sha256 of the whole batch and the number of values found per entity
type; never the text.

:func:`guarded` sets which run's policy and ledger apply while an evaluation runs, and
:func:`allowing` the recipe's policy while ``ayar synth`` asks a teacher; outside them the
default applies (refuse, default ledger).
"""

from __future__ import annotations

import contextvars
import functools
import ipaddress
import json
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from ayar.errors import AyarError


@dataclass(frozen=True)
class Policy:
    allow_pii: bool = False
    run_dir: str | None = None


_policy: contextvars.ContextVar[Policy | None] = contextvars.ContextVar("ayar_external_policy", default=None)


@contextmanager
def guarded(run_dir: str | Path) -> Iterator[Policy]:
    """Apply ``run_dir``'s ``governance.allow_external_pii`` and ledger to external calls inside the block."""
    from ayar.govern.record import run_governance

    governance = run_governance(run_dir)
    policy = Policy(bool(governance and governance.allow_external_pii), str(Path(run_dir).resolve()))
    token = _policy.set(policy)
    try:
        yield policy
    finally:
        _policy.reset(token)


@contextmanager
def allowing(allow_pii: bool) -> Iterator[Policy]:
    """Apply a recipe's ``governance.allow_external_pii`` (no run folder yet: ``ayar synth``) inside the block."""
    token = _policy.set(Policy(bool(allow_pii), None))
    try:
        yield _policy.get()
    finally:
        _policy.reset(token)


def is_local(base_url: str) -> bool:
    """True when ``base_url``'s host is this machine's loopback (localhost, 127.0.0.0/8, ::1)."""
    host = (urlparse(base_url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@functools.lru_cache(maxsize=1)
def shared_redactor():
    """One default redactor per process (building the analyzer takes a while; it detects, never keys)."""
    from ayar.data.pii import Redactor

    return Redactor()


def scan(conversations: Sequence[Sequence[dict]]) -> Counter[str]:
    """Values of each PII entity type found in the messages' contents (Presidio + ayar's recognizers)."""
    texts = list(dict.fromkeys(str(m.get("content") or "") for conv in conversations for m in conv))
    found: Counter[str] = Counter()
    redactor = shared_redactor()
    for start in range(0, len(texts), 256):
        for _, findings in redactor.redact_texts(texts[start:start + 256]):
            found.update(f.entity_type for f in findings)
    return found


def check_outgoing(base_url: str, model: str, conversations: Sequence[Sequence[dict]]) -> None:
    """Refuse (and record) a batch bound for another machine that holds personal data, unless allowed.

    Raises:
        AyarError: personal data found and the run does not allow sending it; nothing was sent.
    """
    if is_local(base_url) or not conversations:
        return
    import hashlib

    from ayar.govern.record import ledger_for_run, open_ledger

    policy = _policy.get() or Policy()
    found = scan(conversations)
    allowed = not found or policy.allow_pii
    batch = hashlib.sha256(json.dumps([list(c) for c in conversations], sort_keys=True, ensure_ascii=False)
                           .encode("utf-8")).hexdigest()
    parsed = urlparse(base_url)
    ledger = ledger_for_run(policy.run_dir) if policy.run_dir else open_ledger()
    ledger.append("external_call", {
        "destination": f"{parsed.scheme}://{parsed.hostname}{f':{parsed.port}' if parsed.port else ''}",
        "model": model, "run_dir": policy.run_dir, "requests": len(conversations),
        "messages": sum(len(c) for c in conversations), "batch_sha256": batch,
        "pii_found": dict(found.most_common()), "sent": allowed,
        "allowed_by": "governance.allow_external_pii" if found and allowed else None})
    if not allowed:
        kinds = ", ".join(f"{n} {kind}" for kind, n in found.most_common())
        raise AyarError(f"refusing to send {len(conversations)} requests to {parsed.hostname} ({model}): the prompts "
                        f"hold personal data ({kinds}); nothing was sent. Redact the evaluation data "
                        "(`ayar prepare` or `ayar data redact`), use a judge on this machine, or set "
                        "governance.allow_external_pii: true in the run's recipe if your legal basis covers "
                        "the transfer (it is recorded in the audit ledger)")
