"""Guarded long-running tasks and the sync entry point every service's `main()` uses.

A core task that fails or finishes unexpectedly is logged at once and stops the service (Kubernetes
restarts it) instead of leaving it limping.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from lazyload_common import errors
from lazyload_common import settings as settings_module

log = logging.getLogger(__name__)


def create_guarded_task(
    coro: Coroutine[Any, Any, Any], *, name: str, stop: asyncio.Event | None = None
) -> asyncio.Task[Any]:
    """Start `coro` as a named task; if it fails or ends while not stopping, log it and set `stop`."""

    async def guard() -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("task %s failed", name)
            if stop is not None:
                stop.set()
            raise
        else:
            if stop is not None and not stop.is_set():
                log.warning("task %s finished unexpectedly; stopping", name)
                stop.set()

    return asyncio.create_task(guard(), name=name)


async def cancel_and_wait(*tasks: asyncio.Task[Any]) -> None:
    """Cancel tasks and wait for them, swallowing their cancellation and failures."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def until(awaitable: Awaitable[Any], stop: asyncio.Event) -> bool:
    """Await `awaitable` unless `stop` comes first; True when it completed."""
    work = asyncio.ensure_future(awaitable)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
        completed = work.done()
    finally:
        await cancel_and_wait(work, stopping)
    return completed


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def settle_heap() -> None:
    """Collect once, then move every object alive now (modules, schemas, descriptors: the bulk of
    a freshly started service's heap) out of the garbage collector's sight (`gc.freeze`).

    Every full collection would otherwise walk them again, and a busy service collects often: the
    ingest's first sight of new edges spent about a third of its publishing time in the collector before
    this. For a process's start only (a console script's `main`): what is frozen is never
    collected, so a process that starts services over and over (the tests) must not call it."""
    gc.collect()
    gc.freeze()


def run_main(run: Callable[..., Awaitable[None]], settings: Any) -> None:
    """A service's console script: its settings (a model class is read from the environment:
    `settings.from_environment`; a misspelt `LAZYLOAD_*` variable or a bad value ends the
    process at once with one line naming it), logging at `settings.log_level`, the heap settled
    (`settle_heap`), then `run(settings, stop=...)` until it returns or SIGTERM/SIGINT sets
    `stop`."""
    if isinstance(settings, type):
        try:
            settings = settings_module.from_environment(settings)
        except errors.ConfigError as e:
            raise SystemExit(f"{Path(sys.argv[0]).name}: {e}") from None
    configure_logging(settings.log_level)
    settle_heap()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run(settings, stop=stop)

    asyncio.run(main())
