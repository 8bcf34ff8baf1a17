"""Wiring of accesslog-ingest: settings -> index, NATS, publisher, ALS server, admin app.

Start order: admin app (so /healthz answers at once), Kubernetes index (list+watch, waited for,
so the first entries do not meet an empty index), NATS and the dependency stream, the publisher,
then the gRPC listener; `ready` is set when all serve (`lazyload_common.runtime`). Stop order, the
reverse: the gRPC listener (no new edges), the publisher (flushes what it can), NATS, the index,
the admin app.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from lazyload_common import codec, events, kube, runtime, subjects, tasks
from nats.aio.msg import Msg

from lazyload_accesslog_ingest import indexing, metrics, rejections
from lazyload_accesslog_ingest.deduplicating import EdgeMemory
from lazyload_accesslog_ingest.ingesting import Ingestor
from lazyload_accesslog_ingest.publishing import EdgePublisher
from lazyload_accesslog_ingest.receiving import (
    AccessLogReceiver,
    AlsServer,
    MeshPort,
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
    mesh_grpc: int | None = None
    """The mesh ALS port (`grpc.mesh_port`), None when it is off."""


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
    recent = rejections.RecentRejections()
    # NATS is shown, not gating: while it is away the ALS streams keep coming and the edges wait
    # in the publish buffer (publish.buffer_size); unready, ingest would leave its Service and
    # the global-sidecar's access logs would be lost instead.
    async with runtime.Runtime(
        SERVICE,
        settings.admin,
        checks=CHECKS,
        informational=("nats",),
        routers=[rejections.create_router(recent)],
        stop=stop,
        ready=ready,
    ) as rt:
        if index is None:
            index = indexing.ServiceIndex()
            indexer = _start_indexer(settings, index)
            rt.on_stop(indexer.stop, name="index")
            rt.check("index", indexer.synced)
            if not await rt.until(indexer.wait_synced()):
                return
        else:
            rt.check("index", lambda: True)
        nc = await rt.connect_nats(settings.nats, streams=[subjects.DEPS_STREAM])
        memory = EdgeMemory(
            max_edges=settings.dedup.max_edges, refresh_interval=settings.dedup.refresh_interval
        )
        publisher = EdgePublisher(
            nc,
            memory,
            settings.publish,
            connected=lambda: nc.is_connected,
            ensure_stream=rt.ensure_streams,
        )
        # stopped after the listener, it flushes what it can
        rt.task(publisher.run(rt.stop), name="publisher", drain=math.inf)
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
        server = _als_server(settings, ingestor, publisher)
        rt.on_stop(lambda: server.stop(settings.grpc.shutdown_grace), name="grpc")
        grpc_port = await server.start()
        mesh = _mesh_server(settings, server)
        mesh_port = None
        if mesh is not None:
            rt.on_stop(lambda: mesh.stop(settings.grpc.shutdown_grace), name="grpc-mesh")
            mesh_port = await mesh.start()
        rt.check("grpc", lambda: server.listening and (mesh is None or mesh.listening))
        if on_bound is not None:
            on_bound(BoundPorts(grpc=grpc_port, admin=rt.admin_port, mesh_grpc=mesh_port))
        rt.ready("ALS on port %d, admin on port %d", grpc_port, rt.admin_port)
        await rt.stopped()


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


def _als_server(
    settings: IngestSettings, ingestor: Ingestor, publisher: EdgePublisher
) -> AlsServer:
    grpc = settings.grpc
    limits = StreamLimits(
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
        AccessLogReceiver(ingestor, publisher.offer_all, limits),
        host=grpc.host,
        port=grpc.port,
        max_message_bytes=grpc.max_message_bytes,
        credentials=credentials,
    )


def _mesh_server(settings: IngestSettings, main: AlsServer) -> AlsServer | None:
    """The mesh ALS port beside `main` (same ingestor, sink, limits and count of open streams),
    plaintext behind the pod's istio-proxy: every stream is checked against its
    x-forwarded-client-cert."""
    grpc = settings.grpc
    if grpc.mesh_port is None:
        return None
    receiver = main.receiver
    mesh = MeshPort(global_sidecar_accounts=frozenset({grpc.mesh_global_sidecar_account}))
    return AlsServer(
        AccessLogReceiver(
            receiver.ingestor, receiver.sink, receiver.limits, mesh=mesh, streams=receiver.streams
        ),
        host=grpc.host,
        port=grpc.mesh_port,
        max_message_bytes=grpc.max_message_bytes,
    )


def _start_indexer(settings: IngestSettings, index: indexing.ServiceIndex) -> indexing.KubeIndexer:
    api = kube.KubeApi.from_settings(settings.kube)
    indexer = indexing.KubeIndexer(api, index, loop=asyncio.get_running_loop())
    indexer.start()
    return indexer
