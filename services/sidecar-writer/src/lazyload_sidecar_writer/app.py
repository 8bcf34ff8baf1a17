"""Wiring of sidecar-writer: settings -> admin app, sink (API or GitOps dir), NATS, fence consumer.

Start order: settings check, admin app (/healthz answers at once), NATS and the streams it uses
(Istio's Sidecar model is built meanwhile), the sink (told the newest revisions in the fence
stream) and its reachability probe, the fence consumer; `ready` is set once NATS is connected,
the consumer is subscribed and the sink answered a probe. Stop order (`lazyload_common.runtime`):
the consumer finishes its batch (so every fetched message is settled), the probe and drift
repair, the sink, NATS, the admin app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from lazyload_common import jetstream, kube, runtime, subjects, tasks

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
    async with runtime.Runtime(
        SERVICE, settings.admin, checks=CHECKS, stop=stop, ready=ready
    ) as rt:
        if on_bound is not None:
            on_bound(rt.admin_port)
        # Istio's Sidecar model of the configured version (seconds of CPU): built in a thread
        # while NATS connects, so the consumer never builds it in the event loop.
        await asyncio.gather(
            rt.connect_nats(settings.nats, streams=STREAMS),
            asyncio.to_thread(validating.sidecar_model, settings.sidecar.api_version),
        )
        sink, closing = build_sink(settings, newest_revision=consuming.newest_in_stream(rt.js))
        rt.on_stop(closing, name="sink")
        reachable = asyncio.Event()
        rt.check("sink", reachable.is_set)
        rt.task(
            _probe(sink, settings.sidecar.probe_interval, reachable, rt.stop), name="sink-probe"
        )
        handler = consuming.FenceHandler(
            settings,
            sink,
            consuming.publisher(rt.js, replicas=settings.nats.stream_replicas),
            reporter=build_reporter(settings, sink),
            guard=build_guard(settings, sink),
        )
        # at shutdown it finishes its batch (so every fetched message is settled) before the rest
        rt.task(
            jetstream.consume(rt.js, consuming.consumer_spec(settings), handler, rt.stop),
            name="consume-fences",
            drain=30,
        )
        if settings.sidecar.repair_interval > 0:
            rt.task(
                repairing.repair_loop(rt.js, sink, handler, settings, rt.stop),
                name="drift-repair",
            )
        if await rt.until(reachable.wait()):
            rt.ready("sink %s, admin answering", settings.sidecar.sink)
            await rt.stopped()


def build_sink(
    settings: WriterSettings, *, newest_revision: applying.NewestRevision | None = None
) -> tuple[Sink, Callable[[], None]]:
    """The configured sink and how to release it; `newest_revision` tells the API sink the
    newest revision of a fence known in the stream (see `applying`)."""
    if settings.sidecar.sink == "gitops":
        assert settings.sidecar.gitops_dir is not None  # settings.check() made sure
        return gitops.FileSink(settings.sidecar.gitops_dir), lambda: None
    # its threads: every write in flight (sidecar.max_concurrency) + room for repair and reports
    client = kube.AsyncKube.from_settings(
        settings.kube, threads=settings.sidecar.max_concurrency + 4, name="sidecar-api"
    )
    sink = applying.KubeSink(client, settings, newest_revision=newest_revision)
    return sink, client.close


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
