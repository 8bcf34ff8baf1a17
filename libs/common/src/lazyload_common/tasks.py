"""Guarded long-running tasks and the sync entry point every service's `main()` uses.

A core task that fails or finishes unexpectedly is logged at once and stops the service instead of
leaving it limping, and the process exits non-zero (`run_main`), so that its supervisor (a
Deployment, `lazyload up`) restarts it: a stop by SIGTERM/SIGINT exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.metadata
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lazyload_common import errors
from lazyload_common import settings as settings_module

log = logging.getLogger(__name__)


class Stop(asyncio.Event):
    """The stop event of a service that also says whether a task failed (`failure`): a stop
    asked for from outside is a clean one, a fatal task's is not."""

    def __init__(self) -> None:
        super().__init__()
        self.failure: str | None = None

    def fail(self, reason: str) -> None:
        """Stop because of `reason` (the first reason is kept)."""
        if self.failure is None and not self.is_set():
            self.failure = reason
        self.set()


def stop_for(stop: asyncio.Event, reason: str) -> None:
    """Set `stop` because something fatal happened (recorded when it is a `Stop`)."""
    if isinstance(stop, Stop):
        stop.fail(reason)
    else:
        stop.set()


def create_guarded_task(
    coro: Coroutine[Any, Any, Any], *, name: str, stop: asyncio.Event | None = None
) -> asyncio.Task[Any]:
    """Start `coro` as a named task; if it fails or ends while not stopping, log it and set `stop`
    as a failure (`stop_for`): the service stops, and its console script exits non-zero."""

    async def guard() -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.exception("task %s failed", name)
            if stop is not None:
                stop_for(stop, f"task {name} failed: {e!r}")
            raise
        else:
            if stop is not None and not stop.is_set():
                log.warning("task %s finished unexpectedly; stopping", name)
                stop_for(stop, f"task {name} finished unexpectedly")

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


def configure_logging(level: str = "INFO", log_format: str = "text") -> None:
    """Log at `level`, as text lines or (`json`) as one JSON object a line (`JsonFormatter`)."""
    if log_format == "json":
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logging.basicConfig(level=level.upper(), handlers=[handler])
        return
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


class JsonFormatter(logging.Formatter):
    """One JSON object a line: `time` (RFC 3339, UTC), `level`, `logger`, `message`, `fence`
    (`<namespace>/<name>`, from a call's `extra={"fence": ...}`) when the line is about one, and
    `exception` with the traceback. The standard library suffices for these few fields: no
    logging dependency for every service."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fence = getattr(record, "fence", None)
        if fence is not None:
            line["fence"] = str(fence)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def freeze_heap() -> None:
    """Collect once, then move every object alive now (modules, schemas, descriptors: the bulk of
    a freshly started service's heap) out of the garbage collector's sight (`gc.freeze`).

    Every full collection would otherwise walk them again, and a busy service collects often: the
    ingest's first sight of new edges spent about a third of its publishing time in the collector before
    this. For a process's start only (a console script's `main`): what is frozen is never
    collected, so a process that starts services over and over (the tests) must not call it."""
    gc.collect()
    gc.freeze()


def command_line(program: str, run: Callable[..., Awaitable[None]], argv: list[str]) -> None:
    """A service takes no arguments (its settings are `LAZYLOAD_*` variables): `--help` and
    `--version` answer and exit instead of starting it; anything else is an error (exit 2)."""
    module = sys.modules.get(run.__module__)
    summary = ((module.__doc__ if module else "") or "").strip().split("\n\n")[0]
    parser = argparse.ArgumentParser(
        prog=program,
        description=summary,
        epilog="Configured by LAZYLOAD_* environment variables (groups joined by __): see the "
        "README's Configuration section. A misspelt variable stops it at start-up.",
    )
    parser.add_argument("--version", action="version", version=f"{program} {_version(program)}")
    parser.parse_args(argv)


def _version(program: str) -> str:
    try:
        return importlib.metadata.version(program)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def run_main(run: Callable[..., Awaitable[None]], settings: Any) -> None:
    """A service's console script: its settings (a model class is read from the environment:
    `settings.from_environment`; a misspelt `LAZYLOAD_*` variable or a bad value ends the
    process at once with one line naming it), logging at `settings.log_level`, the heap frozen
    (`freeze_heap`), then `run(settings, stop=...)` until it returns or SIGTERM/SIGINT sets
    `stop`. When a task stopped the service (`create_guarded_task`), the process exits with
    status 1 and one line saying which, so that its supervisor restarts it."""
    program = Path(sys.argv[0]).name
    command_line(program, run, sys.argv[1:])
    if isinstance(settings, type):
        try:
            settings = settings_module.from_environment(settings)
        except errors.ConfigError as e:
            raise SystemExit(f"{program}: {e}") from None
    configure_logging(settings.log_level, getattr(settings, "log_format", "text"))
    freeze_heap()
    failure = asyncio.run(serve(run, settings))
    if failure is not None:
        raise SystemExit(f"{program}: stopped because {failure}")


async def serve(run: Callable[..., Awaitable[None]], settings: Any) -> str | None:
    """`run(settings, stop=...)` until it returns or SIGTERM/SIGINT sets `stop`; why a task
    stopped it, or None for a clean stop."""
    stop = Stop()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await run(settings, stop=stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return stop.failure
