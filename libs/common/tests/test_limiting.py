"""The client-side rate limit: a burst is served at once, then `qps` calls a second, to tasks
and threads alike; a cancelled wait gives its token back."""

from __future__ import annotations

import asyncio
import contextlib
import threading
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


def test_threads_wait_on_the_same_bucket() -> None:
    bucket = TokenBucket(qps=100, burst=1)
    started = time.monotonic()
    threads = [threading.Thread(target=bucket.wait) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - started >= 4 / 100 * 0.9


async def test_a_cancelled_wait_gives_its_token_back() -> None:
    bucket = TokenBucket(qps=10, burst=1)
    await bucket.acquire()
    waiting = asyncio.create_task(bucket.acquire())
    await asyncio.sleep(0.01)
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    started = time.monotonic()
    await bucket.acquire()  # due 0.1 s after the first, not 0.2 s
    assert time.monotonic() - started < 0.15
