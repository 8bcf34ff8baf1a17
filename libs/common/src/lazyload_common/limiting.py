"""Client-side rate limit of API calls: a token bucket of `qps` tokens a second, `burst` deep.

Like client-go's QPS/burst (`LAZYLOAD_KUBE__QPS`, `LAZYLOAD_KUBE__BURST`): a burst of events never
turns into a burst of API requests. Every service's Kubernetes client (`kube.AsyncKube`) holds
one, shared by its async calls (`acquire`) and the blocking ones of its threads - list/watch
reflectors, blocking adapters (`wait`).

A caller reserves its token at once and waits until it is due, so callers are served in arrival
order whichever thread or task they come from; an async caller cancelled while waiting gives its
token back.
"""

from __future__ import annotations

import asyncio
import threading
import time


class TokenBucket:
    """`await acquire()` (tasks) or `wait()` (threads) returns when a token is free."""

    def __init__(self, qps: float, burst: int) -> None:
        if qps <= 0 or burst < 1:
            raise ValueError(f"a rate limit needs qps > 0 and burst >= 1, not {qps}/{burst}")
        self.qps = qps
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take the next token: the seconds until it is due (0.0 when it is free now)."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.qps)
            self._stamp = now
            self._tokens -= 1
            return 0.0 if self._tokens >= 0 else -self._tokens / self.qps

    def _give_back(self) -> None:
        with self._lock:
            self._tokens = min(float(self.burst), self._tokens + 1)

    async def acquire(self) -> None:
        delay = self.reserve()
        if delay <= 0:
            return
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            self._give_back()
            raise

    def wait(self) -> None:
        """The blocking `acquire`, for threads."""
        delay = self.reserve()
        if delay > 0:
            time.sleep(delay)
