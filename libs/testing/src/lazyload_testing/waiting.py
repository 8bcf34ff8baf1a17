"""Waiting for a condition in tests and benchmarks: poll it until it holds, fail after a timeout
(never a bare sleep). `wait_for` for synchronous callers, `eventually` in the event loop."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any


def wait_for(
    probe: Callable[[], Any],
    *,
    timeout: float,
    interval: float = 0.1,
    what: str = "condition",
    ignore: tuple[type[Exception], ...] = (),
) -> Any:
    """Call `probe` every `interval` seconds until it returns something truthy, and return that;
    TimeoutError naming `what` after `timeout` seconds. A probe that raises one of `ignore`
    (what is not there yet) counts as not true yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = probe()
        except ignore:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout}s")
        time.sleep(interval)


async def eventually(
    check: Callable[[], Awaitable[Any] | Any], *, timeout: float = 10.0, what: str = ""
) -> Any:
    """Poll `check` (a function or a coroutine function) every 50 ms until it returns something
    truthy, and return that; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or check}")
        await asyncio.sleep(0.05)


async def serve_until(
    run: Callable[..., Awaitable[None]],
    settings: Any,
    done: Callable[[], Any],
    *,
    timeout: float = 10.0,
    ready_within: float = 20.0,
    stop_within: float = 15.0,
) -> None:
    """Run a service's `run(settings, stop=, ready=)` until it is ready and then `done()` holds
    (`eventually`, up to `timeout` seconds); then stop it and wait for it to end."""
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.ensure_future(run(settings, stop=stop, ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), ready_within)
        await eventually(done, timeout=timeout)
    finally:
        stop.set()
        await asyncio.wait_for(task, stop_within)
