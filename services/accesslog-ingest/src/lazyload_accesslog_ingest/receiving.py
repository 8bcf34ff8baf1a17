"""The gRPC Access Log Service server (grpc.aio): Envoy streams access logs here.

`StreamAccessLogs` is registered with an identity request deserializer, so each message arrives
as bytes and is decoded by `ingesting` per message: a message that is not protobuf is counted
(`lazyload_ingest_rejected_total{reason="malformed_message"}`) and skipped, and the stream goes
on. (With the generated deserializer, grpc.aio would end the whole stream on the first bad
message.) The stream's identity is kept per stream. Edges go to a sink (the publisher), counted
here; this module never talks to NATS or Kubernetes.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc
from lazyload_common import events

from lazyload_accesslog_ingest import metrics
from lazyload_accesslog_ingest.ingesting import Ingestor, Outcome, StreamState
from lazyload_accesslog_ingest.records import Rejection

log = logging.getLogger(__name__)
SERVICE_NAME = "envoy.service.accesslog.v3.AccessLogService"
METHOD_NAME = "StreamAccessLogs"
METHOD_PATH = f"/{SERVICE_NAME}/{METHOD_NAME}"
EdgeSink = Callable[[events.DependencyObserved], object]


class AccessLogReceiver(als_pb2_grpc.AccessLogServiceServicer):
    """Reads ALS streams (raw bytes per message) and hands each message's edges to `sink`."""

    def __init__(self, ingestor: Ingestor, sink: EdgeSink) -> None:
        self.ingestor = ingestor
        self.sink = sink

    async def StreamAccessLogs(
        self, request_iterator: AsyncIterator[bytes], context: Any
    ) -> als_pb2.StreamAccessLogsResponse:
        stream = StreamState()
        metrics.STREAMS.inc()
        try:
            async for raw in request_iterator:
                self.handle(raw, stream)
        finally:
            metrics.STREAMS.dec()
            if stream.identity is not None:
                log.debug("ALS stream of %s ended", stream.identity.node_id)
        return als_pb2.StreamAccessLogsResponse()

    def handle(self, raw: bytes, stream: StreamState) -> Outcome:
        """Process one message of `stream`: count it and offer its edges."""
        metrics.MESSAGES.inc()
        outcome = self.ingestor.ingest(raw, stream)
        for kind, count in outcome.entries.items():
            metrics.ENTRIES.labels(kind).inc(count)
        for reason, count in outcome.rejections.items():
            metrics.REJECTED.labels(reason.value).inc(count)
            if reason is Rejection.UNKNOWN_CALLER:
                metrics.UNKNOWN_CALLERS.inc(count)
        metrics.EDGES_OBSERVED.inc(len(outcome.edges))
        for edge in outcome.edges:
            self.sink(edge)
        return outcome

    def handler(self) -> grpc.GenericRpcHandler:
        """The generic handler of the service, with bytes in (parsed per message)."""
        method = grpc.stream_unary_rpc_method_handler(
            self.StreamAccessLogs,
            request_deserializer=None,
            response_serializer=als_pb2.StreamAccessLogsResponse.SerializeToString,
        )
        return grpc.method_handlers_generic_handler(SERVICE_NAME, {METHOD_NAME: method})


class AlsServer:
    """A grpc.aio server with the receiver on `host:port` (port 0 = a free port)."""

    def __init__(
        self, receiver: AccessLogReceiver, *, host: str, port: int, max_message_bytes: int
    ) -> None:
        self.receiver = receiver
        self.host = host
        self.requested_port = port
        self.max_message_bytes = max_message_bytes
        self.port: int | None = None
        self._server: grpc.aio.Server | None = None

    @property
    def listening(self) -> bool:
        return self._server is not None and self.port is not None

    async def start(self) -> int:
        """Bind and start serving; the bound port."""
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self.max_message_bytes),
                ("grpc.so_reuseport", 0),
            ]
        )
        server.add_generic_rpc_handlers((self.receiver.handler(),))
        host = f"[{self.host}]" if ":" in self.host else self.host
        address = f"{host}:{self.requested_port}"
        try:
            port = server.add_insecure_port(address)
        except RuntimeError as e:  # grpcio >= 1.60 raises instead of returning 0
            raise OSError(f"cannot bind the ALS server to {address}: {e}") from e
        if port == 0:
            raise OSError(f"cannot bind the ALS server to {address}")
        await server.start()
        self._server, self.port = server, port
        log.info("ALS server listening on %s:%d", self.host, port)
        return port

    async def stop(self, grace: float) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
