"""Wiring of fence-reconciler: settings -> admin app, NATS, Kubernetes watches, reconciler, consumer.

Start order: the admin app (so /healthz answers at once), NATS and the streams, the watches of
ServiceFences, Services, Namespaces, VirtualServices and ServiceEntries (waited for: decisions need them), the seed of what was
already published (the last event per fence subject), the start-up resync (every fence is queued:
a revision written but never published is published now, a fence deleted while we were down is
announced deleted), then the dependency consumer; `ready` is set when all run. Stop order
(`lazyload_common.runtime`): the consumer (it finishes its batch, so nothing is acked half-done),
the workers, the watches, NATS, the admin app.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from lazyload_common import adminauth, jetstream, kube, runtime, subjects, tasks

from lazyload_fence_reconciler import api, applying, consuming, publishing, reconciling, watching
from lazyload_fence_reconciler.settings import SERVICE, ReconcilerSettings

log = logging.getLogger(__name__)
WORKERS = 4
CHECKS = ("nats", "kube", "consumer")
STREAMS = (subjects.DEPS_STREAM, subjects.FENCES_STREAM, subjects.DLQ_STREAM)


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
    async with runtime.Runtime(
        SERVICE, settings.admin, checks=CHECKS, docs=settings.admin.docs, stop=stop, ready=ready
    ) as rt:
        if on_bound is not None:
            on_bound(rt.admin_port)
        await rt.connect_nats(settings.nats, streams=STREAMS)
        # one client: every call (+ the occasional get/tombstone) and every list/watch obeys kube.qps
        kube_client = kube.AsyncKube.from_settings(
            settings.kube, threads=settings.fence.concurrency + 2, name="fence-api"
        )
        kube_api = kube_client.blocking
        identity = settings.fence.workload_identity()
        tombstone_map = (
            settings.mesh.global_sidecar_namespace,
            settings.fence.tombstone_config_map,
        )
        cluster = watching.Cluster(
            kube_api,
            asyncio.get_running_loop(),
            cluster_domain=settings.mesh.cluster_domain,
            aliases=settings.fence.aliases(),
            stable_hosts=settings.fence.stable_domains(),
            workload_key=identity.key if identity else None,
            tombstone_map=tombstone_map,
        )
        reconciler = reconciling.Reconciler(
            settings=settings.scoped_fence(),
            applier=applying.Applier(
                kube_client,
                conflict_retries=settings.fence.conflict_retries,
                istio_rev=settings.fence.istio_rev,
                tombstone_map=tombstone_map,
            ),
            publisher=publishing.Publisher(rt.js, replicas=settings.nats.stream_replicas),
            cluster=cluster,
        )
        cluster.subscribe(reconciler)
        guard = adminauth.AdminGuard(settings.admin, kube_api)
        rt.app.include_router(
            api.create_router(
                reconciler, cluster, cluster_domain=settings.mesh.cluster_domain, guard=guard
            )
        )
        rt.app.include_router(api.create_page_router())
        rt.check("kube", cluster.synced)
        cluster.start()
        rt.on_stop(cluster.stop, name="watches")
        started = time.monotonic()
        if not await rt.until(cluster.wait_synced()):
            return
        log.info("watches synced in %.1f s", time.monotonic() - started)
        await reconciler.tombstones.migrate()
        await reconciler.seed()
        log.info("seeded in %.1f s", time.monotonic() - started)
        reconciler.enqueue_all()
        consumer = _start_tasks(rt, settings, reconciler)
        rt.check("consumer", lambda: not consumer.done())
        rt.ready("%d fences", len(cluster.fence_keys()))
        await rt.stopped()


def _start_tasks(
    rt: runtime.Runtime, settings: ReconcilerSettings, reconciler: reconciling.Reconciler
) -> asyncio.Task[None]:
    """The dependency consumer (at shutdown it finishes its batch, so nothing is acked
    half-done, before the workers are cancelled), the workers and the periodic resync."""
    handler = consuming.BatchHandler(reconciler, settings.fence)
    spec = consuming.consumer_spec(settings.fence, stream_replicas=settings.nats.stream_replicas)
    consumer = rt.task(jetstream.consume(rt.js, spec, handler, rt.stop), name="consumer", drain=30)
    for i in range(WORKERS):
        rt.task(reconciler.run_worker(), name=f"worker-{i}")
    if settings.fence.resync_interval > 0:
        rt.task(reconciler.run_resync(settings.fence.resync_interval), name="resync")
    return consumer
