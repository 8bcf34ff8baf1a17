"""Wiring of accesslog-ingest: settings -> index, NATS, publisher, ALS server, admin app.

Start order: admin app (so /healthz answers at once), Kubernetes index (list+watch, waited for,
so the first entries do not meet an empty index), NATS and the dependency stream, the publisher,
then the gRPC listener; `ready` is set when all serve. Stop order: the gRPC listener (no new
edges), the publisher (flushes what it can), the index, NATS, the admin app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from lazyload_common import admin, codec, events, jetstream, kube, subjects, tasks
from nats.aio.msg import Msg

from lazyload_accesslog_ingest import indexing, metrics, rejections
from lazyload_accesslog_ingest.deduplicating import EdgeMemory
from lazyload_accesslog_ingest.ingesting import Ingestor
from lazyload_accesslog_ingest.publishing import EdgePublisher
from lazyload_accesslog_ingest.receiving import (
    AccessLogReceiver,
    AlsServer,
    StreamLimits,
    server_credentials,
)
from lazyload_accesslog_ingest.settings import IngestSettings

log = logging.getLogger(__name__)
CHECKS = ("nats", "index", "grpc")
SERVICE = "accesslog-ingest"


@dataclass(frozen=True, slots=True)
class BoundPorts:
    """The ports the service listens on (useful when the settings asked for port 0)."""

    grpc: int
    admin: int


def main() -> None:
    """Console script: settings from the environment, run until SIGTERM/SIGINT."""
    tasks.run_main(run, IngestSettings)


async def run(
    settings: IngestSettings,
    *,
    stop: asyncio.Event | None = None,
    ready: asyncio.Event | None = None,
    on_bound: Callable[[BoundPorts], None] | None = None,
    index: indexing.ServiceIndex | None = None,
) -> None:
    """Serve until `stop` is set.

    `on_bound` is called with the bound gRPC and admin ports once both listen. `index` replaces
    the Kubernetes-fed index (tests feed it directly); then no Kubernetes API is contacted.
    """
    settings.check()
    stop = stop if stop is not None else asyncio.Event()
    # NATS is shown, not gating: while it is away the ALS streams keep coming and the edges wait
    # in the publish buffer (publish.buffer_size); unready, ingest would leave its Service and
    # the global-sidecar's access logs would be lost instead.
    state = admin.Readiness(CHECKS, informational=("nats",))
    recent = rejections.RecentRejections()
    admin_server = admin.AdminServer(
        admin.create_admin_app(
            SERVICE, readiness=state, routers=[rejections.create_router(recent)]
        ),
        settings.admin.host,
        settings.admin.port,
    )
    await admin_server.start()
    indexer: indexing.KubeIndexer | None = None
    try:
        if index is None:
            index = indexing.ServiceIndex()
            indexer = _start_indexer(settings, index)
            state["index"] = indexer.synced
            if not await tasks.until(indexer.wait_synced(), stop):
                return
        else:
            state["index"] = lambda: True
        await _serve(settings, index, admin_server.port, state, stop, ready, on_bound, recent)
    finally:
        if indexer is not None:
            indexer.stop()
        await admin_server.stop()


async def _serve(
    settings: IngestSettings,
    index: indexing.ServiceIndex,
    admin_port: int,
    state: admin.Readiness,
    stop: asyncio.Event,
    ready: asyncio.Event | None,
    on_bound: Callable[[BoundPorts], None] | None,
    recent: rejections.RecentRejections | None = None,
) -> None:
    nc = await jetstream.connect(settings.nats, name=SERVICE)
    state["nats"] = lambda: nc.is_connected
    js = nc.jetstream()

    async def ensure_stream() -> None:
        await jetstream.ensure_streams(
            js, replicas=settings.nats.stream_replicas, names=[subjects.DEPS_STREAM]
        )

    als: AlsServer | None = None
    publishing: asyncio.Task[None] | None = None
    try:
        await ensure_stream()
        memory = EdgeMemory(
            max_edges=settings.dedup.max_edges, refresh_interval=settings.dedup.refresh_interval
        )
        publisher = EdgePublisher(
            nc,
            memory,
            settings.publish,
            connected=lambda: nc.is_connected,
            ensure_stream=ensure_stream,
        )
        publishing = tasks.create_guarded_task(publisher.run(stop), name="publisher", stop=stop)
        await nc.subscribe(f"{subjects.FENCE_PREFIX}.>", cb=_forgetting(memory))
        ingestor = Ingestor(
            index,
            cluster_domain=settings.mesh.cluster_domain,
            global_sidecar_namespace=settings.mesh.global_sidecar_namespace,
            reporter=settings.reporter,
            publish_unresolved=settings.edges.publish_unresolved,
            decoder=settings.decoder,
            rejections=recent,
        )
        metrics.DECODER.info({"decoder": ingestor.decoder})
        log.info("ALS messages are read by the %s decoder", ingestor.decoder)
        server = als = _als_server(settings, AccessLogReceiver(ingestor, publisher.offer_all))
        grpc_port = await server.start()
        state["grpc"] = lambda: server.listening
        if on_bound is not None:
            on_bound(BoundPorts(grpc=grpc_port, admin=admin_port))
        if ready is not None:
            ready.set()
        log.info("%s ready: ALS on port %d, admin on port %d", SERVICE, grpc_port, admin_port)
        await stop.wait()
    finally:
        stop.set()
        if als is not None:
            await als.stop(settings.grpc.shutdown_grace)
        if publishing is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await publishing
        with contextlib.suppress(Exception):
            await nc.close()


def _forgetting(memory: EdgeMemory) -> Callable[[Msg], Awaitable[None]]:
    """A handler of the fence events topic: a fence that dropped hosts (a reset, recycling)
    makes the memory forget its caller's edges to them, so the next call is learned again at
    once. A live subscription is enough: a restarted ingest starts with an empty memory."""

    async def on_fence(msg: Msg) -> None:
        try:
            event = codec.decode_as(msg.data, events.FenceChanged)
        except Exception as e:  # not ours to judge: the reconciler's consumers validate it
            log.debug("fence event on %s not read: %s", msg.subject, e)
            return
        dropped = set(event.removed)
        if event.deleted or not event.enabled:
            dropped |= set(event.hosts)
        if dropped:
            forgotten = memory.forget(f"{event.namespace}/{event.name}", dropped)
            if forgotten:
                metrics.FORGOTTEN.inc(forgotten)

    return on_fence


def _als_server(settings: IngestSettings, receiver: AccessLogReceiver) -> AlsServer:
    grpc = settings.grpc
    receiver.limits = StreamLimits(
        max_streams=grpc.max_streams,
        idle_timeout=grpc.stream_idle_timeout,
        max_malformed=grpc.max_malformed_per_stream,
    )
    credentials = (
        server_credentials(
            grpc.tls_cert_file,
            grpc.tls_key_file,
            grpc.tls_client_ca_file,
            require_client_cert=grpc.require_client_cert,
        )
        if grpc.tls
        else None
    )
    return AlsServer(
        receiver,
        host=grpc.host,
        port=grpc.port,
        max_message_bytes=grpc.max_message_bytes,
        credentials=credentials,
    )


def _start_indexer(settings: IngestSettings, index: indexing.ServiceIndex) -> indexing.KubeIndexer:
    api = kube.KubeApi(kube.api_client(settings.kube))
    indexer = indexing.KubeIndexer(api, index, loop=asyncio.get_running_loop())
    indexer.start()
    return indexer
