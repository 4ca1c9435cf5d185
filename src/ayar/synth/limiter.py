"""A rate limit in requests and tokens per minute, over a sliding 60-second window.

Hosted APIs limit both: so many requests a minute (RPM) and so many tokens a
minute (TPM, prompt plus completion). A request is let through when, counting it,
the last 60 seconds hold at most ``requests_per_minute`` requests and at most
``tokens_per_minute`` tokens; otherwise the caller waits until the oldest request
in the window falls out of it. A request's tokens are not known before it is
answered, so :meth:`RateLimiter.acquire` books an estimate and
:meth:`RateLimiter.settle` replaces it with what the response reports.

A request larger than the whole token budget waits for an empty window and then
goes alone (it could never fit otherwise). The clock and the sleep are
injectable, so tests check the limit without waiting.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

WINDOW = 60.0  # seconds


class RateLimiter:
    """Requests and tokens per minute; ``None`` for a limit means none.

    Args:
        requests_per_minute: most requests started in any 60-second window.
        tokens_per_minute: most tokens (estimated, then as reported) in any 60-second window.
        clock: monotonic seconds (``time.monotonic``).
        sleep: waits that many seconds (``time.sleep``).
    """

    def __init__(self, requests_per_minute: int | None, tokens_per_minute: int | None, *,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self.rpm = requests_per_minute
        self.tpm = tokens_per_minute
        self.clock = clock
        self.sleep = sleep
        self._window: deque[list] = deque()  # [start time, tokens] per request, oldest first
        self._lock = threading.Lock()
        self.waited = 0.0  # seconds spent waiting, summed over callers

    def acquire(self, tokens: int) -> list:
        """Wait until a request of ``tokens`` (estimated) fits, and book it.

        Returns:
            The booking, for :meth:`settle`.
        """
        while True:
            with self._lock:
                now = self.clock()
                while self._window and self._window[0][0] <= now - WINDOW:
                    self._window.popleft()
                wait = self._wait(now, tokens)
                if wait <= 0:
                    grant = [now, tokens]
                    self._window.append(grant)
                    return grant
                self.waited += wait
            self.sleep(wait)

    def settle(self, grant: list, tokens: int) -> None:
        """Replace a booking's estimate with the tokens the request actually used."""
        with self._lock:
            grant[1] = tokens

    def _wait(self, now: float, tokens: int) -> float:
        """Seconds until the oldest booking leaves the window, or 0 when the request fits now."""
        if not self._window:
            return 0.0
        fits_requests = self.rpm is None or len(self._window) < self.rpm
        fits_tokens = self.tpm is None or sum(t for _, t in self._window) + tokens <= self.tpm
        if fits_requests and fits_tokens:
            return 0.0
        return max(self._window[0][0] + WINDOW - now, 1e-3)
