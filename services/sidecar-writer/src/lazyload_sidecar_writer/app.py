"""Wiring of sidecar-writer: settings -> admin app, sink (API or GitOps dir), NATS, fence consumer.

Start order: settings check, admin app (/healthz answers at once), the sink and its reachability
probe, NATS and the streams it uses, the fence consumer; `ready` is set once NATS is connected,
the consumer is subscribed and the sink answered a probe. Stop order: the consumer finishes its
batch (so every fetched message is settled), the probe, NATS, the admin app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from lazyload_common import admin, jetstream, kube, subjects, tasks
from nats.aio.client import Client as NATS

from lazyload_sidecar_writer import (
    applying,
    consuming,
    gitops,
    guarding,
    repairing,
    reporting,
    validating,
)
from lazyload_sidecar_writer.settings import SERVICE, WriterSettings
from lazyload_sidecar_writer.sinks import Sink

log = logging.getLogger(__name__)
STREAMS = (subjects.FENCES_STREAM, subjects.SIDECARS_STREAM, subjects.DLQ_STREAM)
CHECKS = ("nats", "sink")


def main() -> None:
    """Console script: settings from the environment, run until SIGTERM/SIGINT."""
    tasks.run_main(run, WriterSettings)


async def run(
    settings: WriterSettings,
    *,
    stop: asyncio.Event | None = None,
    ready: asyncio.Event | None = None,
    on_bound: Callable[[int], None] | None = None,
) -> None:
    """Serve until `stop` is set; `on_bound` gets the admin port once it listens."""
    settings.check()
    stop = stop if stop is not None else asyncio.Event()
    state = admin.Readiness(CHECKS)
    admin_server = admin.AdminServer(
        admin.create_admin_app(SERVICE, readiness=state),
        settings.admin.host,
        settings.admin.port,
    )
    await admin_server.start()
    if on_bound is not None:
        on_bound(admin_server.port)
    try:
        sink, closing = build_sink(settings)
        try:
            await _serve(settings, sink, state, stop, ready)
        finally:
            closing()
    finally:
        await admin_server.stop()


def build_sink(settings: WriterSettings) -> tuple[Sink, Callable[[], None]]:
    """The configured sink and how to release it."""
    if settings.sidecar.sink == "gitops":
        assert settings.sidecar.gitops_dir is not None  # settings.check() made sure
        return gitops.FileSink(settings.sidecar.gitops_dir), lambda: None
    client = kube.api_client(settings.kube)
    return applying.KubeSink(kube.KubeApi(client), settings), client.close


def build_reporter(settings: WriterSettings, sink: Sink) -> reporting.Reporter | None:
    """The fence status reporter: only with the API sink and `sidecar.fence_status`."""
    if not settings.sidecar.fence_status or not isinstance(sink, applying.KubeSink):
        return None
    return reporting.FenceStatus(sink, limit=settings.sidecar.max_tracked_fences)


def build_guard(settings: WriterSettings, sink: Sink) -> guarding.FenceGuard | None:
    """The check that a fence exists before its Sidecar is written: with the API sink (the
    GitOps sink makes no API calls, so it cannot tell)."""
    if not isinstance(sink, applying.KubeSink):
        return None
    return guarding.FenceGuard(sink, limit=settings.sidecar.max_tracked_fences)


async def _serve(
    settings: WriterSettings,
    sink: Sink,
    state: admin.Readiness,
    stop: asyncio.Event,
    ready: asyncio.Event | None,
) -> None:
    reachable = asyncio.Event()
    state["sink"] = reachable.is_set
    background: list[asyncio.Task[Any]] = [
        tasks.create_guarded_task(
            _probe(sink, settings.sidecar.probe_interval, reachable, stop),
            name="sink-probe",
            stop=stop,
        )
    ]
    nc: NATS | None = None
    consumer: asyncio.Task[None] | None = None
    # Istio's Sidecar model of the configured version (seconds of CPU): built while NATS connects.
    model = asyncio.ensure_future(
        asyncio.to_thread(validating.sidecar_model, settings.sidecar.api_version)
    )
    try:
        nc = await jetstream.connect(settings.nats, name=SERVICE)
        state["nats"] = _connected(nc)
        js = nc.jetstream()
        await jetstream.ensure_streams(js, replicas=settings.nats.stream_replicas, names=STREAMS)
        if isinstance(sink, applying.KubeSink):
            sink.newest_revision = consuming.newest_in_stream(js)
        handler = consuming.FenceHandler(
            settings,
            sink,
            consuming.publisher(js, replicas=settings.nats.stream_replicas),
            reporter=build_reporter(settings, sink),
            guard=build_guard(settings, sink),
        )
        consumer = tasks.create_guarded_task(
            jetstream.consume(js, consuming.consumer_spec(settings), handler, stop),
            name="consume-fences",
            stop=stop,
        )
        if settings.sidecar.repair_interval > 0:
            background.append(
                tasks.create_guarded_task(
                    repairing.repair_loop(js, sink, handler, settings, stop),
                    name="drift-repair",
                    stop=stop,
                )
            )
        await model
        if not await _first(reachable, stop):
            return
        if ready is not None:
            ready.set()
        log.info("%s ready: sink %s, admin answering", SERVICE, settings.sidecar.sink)
        await stop.wait()
    finally:
        stop.set()
        if not model.done():
            with contextlib.suppress(BaseException):
                await model
        if consumer is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(consumer, timeout=30)
        await tasks.cancel_and_wait(*background)
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()


async def _probe(
    sink: Sink, interval: float, reachable: asyncio.Event, stop: asyncio.Event
) -> None:
    """Probe the sink every `interval` seconds (every 0.5 s while it does not answer)."""
    while not stop.is_set():
        if await sink.probe():
            reachable.set()
        else:
            reachable.clear()
        wait = interval if reachable.is_set() else min(interval, 0.5)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=wait)


async def _first(event: asyncio.Event, stop: asyncio.Event) -> bool:
    """Wait for `event` unless `stop` comes first; True when `event` came."""
    waiting = asyncio.ensure_future(event.wait())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        return event.is_set()
    finally:
        await tasks.cancel_and_wait(waiting, stopping)


def _connected(nc: NATS) -> Callable[[], bool]:
    return lambda: nc.is_connected
