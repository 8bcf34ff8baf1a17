"""Wiring of fence-reconciler: settings -> admin app, NATS, Kubernetes watches, reconciler, consumer.

Start order: the admin app (so /healthz answers at once), NATS and the streams, the watches of
ServiceFences, Services, Namespaces, VirtualServices and ServiceEntries (waited for: decisions need them), the seed of what was
already published (the last event per fence subject), the start-up resync (every fence is queued:
a revision written but never published is published now, a fence deleted while we were down is
announced deleted), then the dependency consumer; `ready` is set when all run. Stop order: the
consumer (it finishes its batch, so nothing is acked half-done), the workers, the watches, NATS,
the admin app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from fastapi import FastAPI
from lazyload_common import admin, adminauth, jetstream, kube, subjects, tasks
from nats.js import JetStreamContext

from lazyload_fence_reconciler import api, applying, consuming, publishing, reconciling, watching
from lazyload_fence_reconciler.settings import SERVICE, ReconcilerSettings

log = logging.getLogger(__name__)
WORKERS = 4
_CHECKS = ("nats", "kube", "consumer")


def main() -> None:
    """Console script: settings from the environment, run until SIGTERM/SIGINT."""
    tasks.run_main(run, ReconcilerSettings)


async def run(
    settings: ReconcilerSettings,
    *,
    stop: asyncio.Event | None = None,
    ready: asyncio.Event | None = None,
    on_bound: Callable[[int], None] | None = None,
) -> None:
    """Serve until `stop` is set; `on_bound` gets the admin port once it listens."""
    settings.check()
    stop = stop if stop is not None else asyncio.Event()
    state = admin.Readiness(_CHECKS)
    app = admin.create_admin_app(SERVICE, readiness=state, docs=settings.admin.docs)
    admin_server = admin.AdminServer(app, settings.admin.host, settings.admin.port)
    await admin_server.start()
    if on_bound is not None:
        on_bound(admin_server.port)
    nc = None
    try:
        nc = await jetstream.connect(settings.nats, name=SERVICE)
        state["nats"] = lambda: nc is not None and nc.is_connected
        js = nc.jetstream()
        await jetstream.ensure_streams(
            js,
            replicas=settings.nats.stream_replicas,
            names=[subjects.DEPS_STREAM, subjects.FENCES_STREAM, subjects.DLQ_STREAM],
        )
        await _serve(settings, js, app, state, stop, ready)
    finally:
        stop.set()
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()
        await admin_server.stop()


async def _serve(
    settings: ReconcilerSettings,
    js: JetStreamContext,
    app: FastAPI,
    state: admin.Readiness,
    stop: asyncio.Event,
    ready: asyncio.Event | None,
) -> None:
    # one client: every call (+ the occasional get/tombstone) and every list/watch obeys kube.qps
    kube_client = kube.AsyncKube.from_settings(
        settings.kube, threads=settings.fence.concurrency + 2, name="fence-api"
    )
    kube_api = kube_client.blocking
    identity = settings.fence.workload_identity()
    cluster = watching.Cluster(
        kube_api,
        asyncio.get_running_loop(),
        cluster_domain=settings.mesh.cluster_domain,
        aliases=settings.fence.aliases(),
        stable_hosts=settings.fence.stable_domains(),
        workload_key=identity.key if identity else None,
    )
    reconciler = reconciling.Reconciler(
        settings=settings.scoped_fence(),
        applier=applying.Applier(
            kube_client,
            conflict_retries=settings.fence.conflict_retries,
            istio_rev=settings.fence.istio_rev,
        ),
        publisher=publishing.Publisher(js, replicas=settings.nats.stream_replicas),
        cluster=cluster,
    )
    cluster.subscribe(reconciler)
    guard = adminauth.AdminGuard(settings.admin, kube_api)
    app.include_router(
        api.create_router(
            reconciler, cluster, cluster_domain=settings.mesh.cluster_domain, guard=guard
        )
    )
    app.include_router(api.create_page_router())
    state["kube"] = cluster.synced
    running: list[asyncio.Task[None]] = []
    cluster.start()
    started = time.monotonic()
    try:
        if not await tasks.until(cluster.wait_synced(), stop):
            return
        log.info("watches synced in %.1f s", time.monotonic() - started)
        await reconciler.seed()
        log.info("seeded in %.1f s", time.monotonic() - started)
        reconciler.enqueue_all()
        running = _start_tasks(settings, js, reconciler, stop)
        state["consumer"] = lambda: not running[0].done()
        if ready is not None:
            ready.set()
        log.info("%s ready: %d fences", SERVICE, len(cluster.fence_keys()))
        await stop.wait()
    finally:
        stop.set()
        if running:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(running[0]), timeout=30)
        await tasks.cancel_and_wait(*running)
        cluster.stop()


def _start_tasks(
    settings: ReconcilerSettings,
    js: JetStreamContext,
    reconciler: reconciling.Reconciler,
    stop: asyncio.Event,
) -> list[asyncio.Task[None]]:
    handler = consuming.BatchHandler(reconciler, settings.fence)
    spec = consuming.consumer_spec(settings.fence, stream_replicas=settings.nats.stream_replicas)
    running = [
        tasks.create_guarded_task(
            jetstream.consume(js, spec, handler, stop), name="consumer", stop=stop
        )
    ]
    for i in range(WORKERS):
        running.append(
            tasks.create_guarded_task(reconciler.run_worker(), name=f"worker-{i}", stop=stop)
        )
    if settings.fence.resync_interval > 0:
        running.append(
            tasks.create_guarded_task(
                reconciler.run_resync(settings.fence.resync_interval), name="resync", stop=stop
            )
        )
    return running
