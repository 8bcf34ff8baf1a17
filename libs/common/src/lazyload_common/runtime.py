"""One runtime for every service: admin app, NATS, guarded tasks, readiness, ordered shutdown.

A service's `run(settings, *, stop, ready, ...)` opens a `Runtime` and declares its parts on it,
in start-up order:

    async with runtime.Runtime(SERVICE, settings.admin, checks=CHECKS, stop=stop, ready=ready) as rt:
        nc = await rt.connect_nats(settings.nats, streams=STREAMS)   # readiness "nats"
        rt.on_stop(indexer.stop)                                      # a part and how it stops
        rt.task(consume(...), name="consumer", drain=30)              # a guarded task
        if await rt.until(synced()):                                  # unless stopped first
            rt.ready("%d fences", n)                                  # `ready` set, logged
            await rt.stopped()

Entering starts the admin app (so /healthz answers at once); `/readyz` reports the named checks,
each set by the part it is about (`check`); a check not set yet is not ready. A guarded task that
fails or ends stops the service as a failure (`tasks.create_guarded_task`: its console script then
exits non-zero). Leaving, however it happens, sets `stop` and stops the parts in the reverse order
of their start; the guarded tasks stop as one part, at the place of the last one started: first
those with a `drain` time are waited for (each up to its time: a consumer finishes its batch, so
nothing is acked half-done), then all are cancelled. The admin app stops last. A part that fails
to stop is logged and the next one still stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any

from fastapi import APIRouter
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from lazyload_common import admin, jetstream, tasks
from lazyload_common.settings import AdminSettings, NatsSettings

log = logging.getLogger(__name__)

StopStep = Callable[[], Awaitable[Any] | Any]


class Runtime:
    """The running parts of one service (see the module docstring)."""

    def __init__(
        self,
        service: str,
        admin_settings: AdminSettings,
        *,
        checks: Iterable[str],
        informational: Iterable[str] = (),
        routers: Iterable[APIRouter] = (),
        docs: bool = False,
        stop: asyncio.Event | None = None,
        ready: asyncio.Event | None = None,
    ) -> None:
        self.service = service
        self.stop: asyncio.Event = stop if stop is not None else tasks.Stop()
        self.readiness = admin.Readiness(checks, informational=informational)
        self.app = admin.create_admin_app(
            service, readiness=self.readiness, routers=routers, docs=docs
        )
        self._admin_settings = admin_settings
        self._admin: admin.AdminServer | None = None
        self._ready = ready
        self._steps: list[tuple[str, StopStep]] = []
        self._tasks: list[tuple[asyncio.Task[Any], float]] = []
        self._nats: NATS | None = None
        self._js: JetStreamContext | None = None
        self._replicas = 1
        self._streams: tuple[str, ...] = ()

    async def __aenter__(self) -> Runtime:
        self._admin = admin.AdminServer(
            self.app, self._admin_settings.host, self._admin_settings.port
        )
        await self._admin.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    @property
    def admin_port(self) -> int:
        """The port the admin app listens on (known once entered)."""
        assert self._admin is not None, "the runtime is not entered"
        return self._admin.port

    def check(self, name: str, ok: Callable[[], bool]) -> None:
        """Set the readiness check `name` (one of `checks`) to `ok`."""
        if name not in self.readiness.names:
            raise ValueError(f"{self.service} has no readiness check {name!r}")
        self.readiness[name] = ok

    def on_stop(self, step: StopStep, *, name: str | None = None) -> None:
        """How the part started last stops (a function or a coroutine function); run at
        shutdown before the parts started earlier."""
        self._steps.append((name or getattr(step, "__qualname__", repr(step)), step))

    async def connect_nats(self, settings: NatsSettings, *, streams: Sequence[str]) -> NATS:
        """Connect to NATS as this service (readiness `nats` when it is a check), make sure of
        `streams` (again with `ensure_streams`, e.g. after the server lost them); closed at
        shutdown after the parts started after it."""
        nc = await jetstream.connect(settings, name=self.service)
        self._nats, self._js = nc, nc.jetstream()
        self._replicas, self._streams = settings.stream_replicas, tuple(streams)
        self.on_stop(nc.close, name="nats")
        if "nats" in self.readiness.names:
            self.check("nats", lambda: nc.is_connected)
        await self.ensure_streams()
        return nc

    @property
    def js(self) -> JetStreamContext:
        """The JetStream context of `connect_nats`."""
        assert self._js is not None, "NATS is not connected"
        return self._js

    async def ensure_streams(self) -> None:
        """Create the service's streams that are missing (idempotent)."""
        await jetstream.ensure_streams(self.js, replicas=self._replicas, names=self._streams)

    def task(
        self, coro: Coroutine[Any, Any, Any], *, name: str, drain: float = 0.0
    ) -> asyncio.Task[Any]:
        """Run `coro` as a guarded task named `name`; at shutdown it is given `drain` seconds
        (`math.inf`: until it ends) to finish on its own after `stop` is set, then cancelled."""
        task = tasks.create_guarded_task(coro, name=name, stop=self.stop)
        self._tasks.append((task, drain))
        self._steps = [step for step in self._steps if step[1] != self._stop_tasks]
        self._steps.append(("tasks", self._stop_tasks))
        return task

    async def until(self, awaitable: Awaitable[Any]) -> bool:
        """Await `awaitable` unless `stop` comes first; True when it completed."""
        return await tasks.until(awaitable, self.stop)

    def ready(self, detail: str = "", *args: object) -> None:
        """Serving: set `ready` (unless stopping) and log it with `detail % args`."""
        if self.stop.is_set():
            return
        if self._ready is not None:
            self._ready.set()
        log.info("%s ready" + (": " + detail if detail else ""), self.service, *args)

    async def stopped(self) -> None:
        """Wait until `stop` is set (SIGTERM/SIGINT, a fatal task, or the embedding caller)."""
        await self.stop.wait()

    async def shutdown(self) -> None:
        """Set `stop`, stop the parts in reverse start order, then the admin app (idempotent)."""
        self.stop.set()
        while self._steps:
            name, step = self._steps.pop()
            try:
                result = step()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.warning("%s: stopping %s failed", self.service, name, exc_info=True)
        if self._admin is not None:
            await self._admin.stop()
            self._admin = None

    async def _stop_tasks(self) -> None:
        running, self._tasks = self._tasks, []
        for task, drain in running:
            if drain > 0:
                timeout = None if math.isinf(drain) else drain
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(asyncio.shield(task), timeout=timeout)
        await tasks.cancel_and_wait(*(task for task, _ in running))
