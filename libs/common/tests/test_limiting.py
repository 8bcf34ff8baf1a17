"""The client-side rate limit: a burst is served at once, then `qps` calls a second."""

from __future__ import annotations

import asyncio
import time

from lazyload_common.limiting import TokenBucket


async def test_burst_then_qps() -> None:
    bucket = TokenBucket(qps=50, burst=3)
    started = time.monotonic()
    for _ in range(3):
        await bucket.acquire()
    assert time.monotonic() - started < 0.02
    await asyncio.gather(*(bucket.acquire() for _ in range(5)))
    assert time.monotonic() - started >= 5 / 50 * 0.9
