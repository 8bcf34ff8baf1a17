"""Client-side rate limit of API calls: a token bucket of `qps` tokens a second, `burst` deep.

Like client-go's QPS/burst (`LAZYLOAD_KUBE__QPS`, `LAZYLOAD_KUBE__BURST`): a burst of events never
turns into a burst of API requests. The sidecar-writer and the fence-reconciler pace their calls
with it.
"""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    """`await acquire()` returns when a token is free; callers are served in arrival order."""

    def __init__(self, qps: float, burst: int) -> None:
        self.qps = qps
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.qps)
        self._stamp = now

    async def acquire(self) -> None:
        async with self._lock:
            self._refill()
            while self._tokens < 1:
                await asyncio.sleep((1 - self._tokens) / self.qps)
                self._refill()
            self._tokens -= 1
