"""The gRPC Access Log Service server (grpc.aio): Envoy streams access logs here.

`StreamAccessLogs` is registered with an identity request deserializer, so each message arrives
as bytes and is decoded by `ingesting` per message: a message that is not protobuf is counted
(`lazyload_ingest_rejected_total{reason="malformed_message"}`) and skipped, and the stream goes
on until it has sent `max_malformed` of them; then it is closed (INVALID_ARGUMENT) and counted.
(With the generated deserializer, grpc.aio would end the whole stream on the first bad message.)
Limits: at most `max_streams` open streams, counted over the service's ALS ports together
(`OpenStreams`; more are refused with RESOURCE_EXHAUSTED), a stream
silent for `idle_timeout` seconds is closed (DEADLINE_EXCEEDED), messages up to
`max_message_bytes`; optional TLS and client-certificate checking on the port (certificate files
reloaded when they change, see `server_credentials`). The stream's
identity is kept per stream.

A receiver with a `MeshPort` serves the mesh ALS port (behind the pod's own istio-proxy, for
ordinary sidecars): a stream must carry the `x-forwarded-client-cert` the proxy set (from a
loopback peer), else it is refused (UNAUTHENTICATED, `lazyload_ingest_streams_closed_total
{reason="unauthenticated"}`); the node its first message claims must be the certificate's
(`identity.claim_problem`), else the stream is closed before any of its entries count
(PERMISSION_DENIED, `reason="identity_mismatch"` and `lazyload_ingest_rejected_total
{reason="identity_mismatch"}`). Edges go to a sink (the publisher), counted here; this module never
talks to NATS or Kubernetes.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

from lazyload_accesslog_ingest import identity, metrics
from lazyload_accesslog_ingest.ingesting import Ingestor, Outcome, Sighting, StreamState
from lazyload_accesslog_ingest.records import Rejection, StreamIdentity

log = logging.getLogger(__name__)
SERVICE_NAME = "envoy.service.accesslog.v3.AccessLogService"
METHOD_NAME = "StreamAccessLogs"
METHOD_PATH = f"/{SERVICE_NAME}/{METHOD_NAME}"
EdgeSink = Callable[[Mapping[str, Sighting], float], object]
"""Takes the edges seen in one message and the time (the publisher's `offer_all`)."""


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """Per-server limits on ALS streams (see `settings.GrpcSettings`)."""

    max_streams: int = 1024
    idle_timeout: float = 0.0
    """Seconds without a message before the stream is closed; 0 = never."""
    max_malformed: int = 10


@dataclass(slots=True)
class OpenStreams:
    """The count of open streams that `StreamLimits.max_streams` bounds: one per service, shared
    by its ALS ports, so that the memory check of the settings (max_streams x max_message_bytes)
    holds whichever port the streams come in on."""

    count: int = 0


@dataclass(frozen=True, slots=True)
class MeshPort:
    """The rule of the mesh ALS port: who may claim to be a global-sidecar."""

    global_sidecar_accounts: frozenset[str] = frozenset({"global-sidecar"})
    """Service accounts whose streams may claim a global-sidecar's node (entries that name their
    callers by address); any other stream speaks only for its own namespace's workloads."""


@dataclass(slots=True)
class Admission:
    """What the transport proved about one mesh-port stream, and the claim found to match it."""

    proven: identity.SpiffeId
    admitted: StreamIdentity | None = None


class _Closed(Exception):
    def __init__(self, reason: str, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.reason, self.code, self.details = reason, code, details


class AccessLogReceiver(als_pb2_grpc.AccessLogServiceServicer):
    """Reads ALS streams (raw bytes per message) and hands each message's edges to `sink`."""

    def __init__(
        self,
        ingestor: Ingestor,
        sink: EdgeSink,
        limits: StreamLimits | None = None,
        *,
        mesh: MeshPort | None = None,
        streams: OpenStreams | None = None,
    ) -> None:
        self.ingestor = ingestor
        self.sink = sink
        self.limits = limits or StreamLimits()
        self.mesh = mesh
        """Set on the mesh ALS port: every stream's identity is checked against its XFCC."""
        self.streams = streams or OpenStreams()
        """Shared with the service's other ALS port: `max_streams` bounds both together."""
        # bound once: a `.labels(...)` lookup per message costs more than the increment
        self._entries = {kind: metrics.ENTRIES.labels(kind) for kind in ("http", "tcp")}
        self._rejected = {reason: metrics.REJECTED.labels(reason.value) for reason in Rejection}

    async def StreamAccessLogs(
        self, request_iterator: AsyncIterator[bytes], context: Any
    ) -> als_pb2.StreamAccessLogsResponse:
        if self.streams.count >= self.limits.max_streams:
            metrics.STREAMS_REFUSED.inc()
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many open ALS streams")
        admission = None
        if self.mesh is not None:
            proven = identity.stream_peer(context.invocation_metadata() or (), context.peer())
            if isinstance(proven, str):
                metrics.STREAMS_CLOSED.labels("unauthenticated").inc()
                log.warning("refusing an ALS stream on the mesh port: %s", proven)
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, proven)
            admission = Admission(proven)  # type: ignore[arg-type]  # not a str: abort raised
        stream = StreamState()
        self.streams.count += 1
        metrics.STREAMS.inc()
        try:
            await self._read(request_iterator, stream, admission)
        except _Closed as closed:
            metrics.STREAMS_CLOSED.labels(closed.reason).inc()
            log.info("closing an ALS stream: %s", closed.details)
            await context.abort(closed.code, closed.details)
        finally:
            self.streams.count -= 1
            metrics.STREAMS.dec()
            if stream.identity is not None:
                log.debug("ALS stream of %s ended", stream.identity.node_id)
        return als_pb2.StreamAccessLogsResponse()

    async def _read(
        self,
        request_iterator: AsyncIterator[bytes],
        stream: StreamState,
        admission: Admission | None = None,
    ) -> None:
        idle = self.limits.idle_timeout
        if not idle:
            async for raw in request_iterator:
                self._handle_checked(raw, stream, admission)
            return
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(idle) as deadline:
                async for raw in request_iterator:
                    self._handle_checked(raw, stream, admission)
                    deadline.reschedule(loop.time() + idle)
        except TimeoutError:
            raise _Closed(
                "idle", grpc.StatusCode.DEADLINE_EXCEEDED, f"no message for {idle:g} s"
            ) from None

    def _handle_checked(self, raw: bytes, stream: StreamState, admission: Admission | None) -> None:
        self.handle(raw, stream, admission)
        if stream.malformed >= self.limits.max_malformed:
            raise _Closed(
                "malformed",
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{stream.malformed} malformed messages",
            )

    def handle(
        self, raw: bytes, stream: StreamState, admission: Admission | None = None
    ) -> Outcome:
        """Process one message of `stream`: count it and offer its edges (on the mesh port only
        once the stream's claimed node matches what its transport proves)."""
        metrics.MESSAGES.inc()
        outcome = self.ingestor.ingest(raw, stream)
        if admission is not None and (
            stream.identity is not admission.admitted
            or (admission.admitted is None and outcome.entries)
        ):
            self.admit(stream.identity, admission)
        for kind, count in outcome.entries.items():
            self._entries[kind].inc(count)
        for reason, count in outcome.rejections.items():
            self._rejected[reason].inc(count)
            if reason is Rejection.UNKNOWN_CALLER:
                metrics.UNKNOWN_CALLERS.inc(count)
        if outcome.unresolved:
            metrics.UNKNOWN_CALLERS.inc(outcome.unresolved)
        if outcome.clamped:
            metrics.START_TIMES_CLAMPED.inc(outcome.clamped)
        if outcome.sightings:
            metrics.EDGES_OBSERVED.inc(outcome.derived)
            self.sink(outcome.sightings, outcome.observed_at)
        return outcome

    def admit(self, claimed: StreamIdentity | None, admission: Admission) -> None:
        """Accept `claimed` as the stream's node, or close the stream (nothing of the message
        that made the claim counts)."""
        assert self.mesh is not None
        problem = identity.claim_problem(
            admission.proven, claimed, global_sidecar_accounts=self.mesh.global_sidecar_accounts
        )
        if problem is not None:
            self._rejected[Rejection.IDENTITY_MISMATCH].inc()
            log.warning("closing an ALS stream on the mesh port: %s", problem)
            raise _Closed("identity_mismatch", grpc.StatusCode.PERMISSION_DENIED, problem)
        admission.admitted = claimed

    def handler(self) -> grpc.GenericRpcHandler:
        """The generic handler of the service, with bytes in (parsed per message)."""
        method = grpc.stream_unary_rpc_method_handler(
            self.StreamAccessLogs,
            request_deserializer=None,
            response_serializer=als_pb2.StreamAccessLogsResponse.SerializeToString,
        )
        return grpc.method_handlers_generic_handler(SERVICE_NAME, {METHOD_NAME: method})


def server_credentials(
    cert_file: str, key_file: str, client_ca_file: str = "", *, require_client_cert: bool = False
) -> grpc.ServerCredentials:
    """TLS credentials of the ALS port from PEM files; with `require_client_cert`, mutual TLS.

    The files are watched: gRPC asks before every new TLS handshake, and when one of them changed
    (cert-manager or a Secret volume rotating them) the new ones are used from then on, without a
    restart. A change that does not load (a half-written pair) keeps the old certificates and is
    counted, and tried again at the next handshake."""
    files = CertificateFiles(cert_file, key_file, client_ca_file)
    return grpc.dynamic_ssl_server_credentials(
        files.load(),
        files.fetch_if_changed,
        require_client_authentication=require_client_cert,
    )


class CertificateFiles:
    """The PEM files of the ALS port, and whether they changed since they were last loaded."""

    def __init__(self, cert_file: str, key_file: str, client_ca_file: str = "") -> None:
        self.paths = tuple(Path(p) for p in (cert_file, key_file, client_ca_file) if p)
        self.cert_file, self.key_file, self.client_ca_file = cert_file, key_file, client_ca_file
        self._seen: tuple[tuple[int, int, int], ...] | None = None

    def _stamp(self) -> tuple[tuple[int, int, int], ...]:
        stats = (p.stat() for p in self.paths)  # follows the symlinks of a Secret volume
        return tuple((s.st_mtime_ns, s.st_size, s.st_ino) for s in stats)

    def load(self) -> Any:
        """The certificate configuration of the files as they are now; ValueError (or OSError)
        when they do not make a usable pair (gRPC itself would only fail the next handshake)."""
        stamp = self._stamp()
        cert, key = Path(self.cert_file).read_bytes(), Path(self.key_file).read_bytes()
        ca = Path(self.client_ca_file).read_bytes() if self.client_ca_file else None
        _check_pair(cert, key, ca)
        config = grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)
        self._seen = stamp
        return config

    def fetch_if_changed(self) -> Any:
        """gRPC's fetcher: a new configuration when a file changed, else None (keep the one in
        use). Never raises: gRPC would fail the handshake."""
        try:
            if self._stamp() == self._seen:
                return None
            config = self.load()
        except Exception as e:  # missing or half-written files: keep serving the old ones
            metrics.TLS_RELOADS.labels("failed").inc()
            log.warning("TLS certificates changed but do not load (%s); keeping the old ones", e)
            return None
        metrics.TLS_RELOADS.labels("reloaded").inc()
        log.info("TLS certificates of the ALS port reloaded from %s", self.cert_file)
        return config


def _check_pair(cert: bytes, key: bytes, ca: bytes | None) -> None:
    """Raise ValueError unless `key` is the private key of `cert` and `ca` (if any) is PEM of CA
    certificates: checked on the very bytes that will be served, through OpenSSL."""
    with tempfile.TemporaryDirectory(prefix="lazyload-tls-") as scratch:
        cert_path, key_path = Path(scratch, "tls.crt"), Path(scratch, "tls.key")
        cert_path.write_bytes(cert)
        key_path.write_bytes(key)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(cert_path, key_path)
            if ca is not None:
                context.load_verify_locations(cadata=ca.decode("ascii"))
        except (ssl.SSLError, UnicodeDecodeError) as e:
            raise ValueError(f"certificate, key or client CA unusable: {e}") from e


class AlsServer:
    """A grpc.aio server with the receiver on `host:port` (port 0 = a free port)."""

    def __init__(
        self,
        receiver: AccessLogReceiver,
        *,
        host: str,
        port: int,
        max_message_bytes: int,
        credentials: grpc.ServerCredentials | None = None,
    ) -> None:
        self.receiver = receiver
        self.host = host
        self.requested_port = port
        self.max_message_bytes = max_message_bytes
        self.credentials = credentials
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
                ("grpc.so_reuseport", 0),  # a second server on the port is an error, not a split
                ("grpc.optimization_target", "throughput"),
            ]
        )
        server.add_generic_rpc_handlers((self.receiver.handler(),))
        host = f"[{self.host}]" if ":" in self.host else self.host
        address = f"{host}:{self.requested_port}"
        try:
            if self.credentials is not None:
                port = server.add_secure_port(address, self.credentials)
            else:
                port = server.add_insecure_port(address)
        except RuntimeError as e:  # grpcio >= 1.60 raises instead of returning 0
            raise OSError(f"cannot bind the ALS server to {address}: {e}") from e
        if port == 0:
            raise OSError(f"cannot bind the ALS server to {address}")
        await server.start()
        self._server, self.port = server, port
        log.info(
            "ALS server listening on %s:%d (%s)",
            self.host,
            port,
            "TLS" if self.credentials is not None else "plaintext",
        )
        return port

    async def stop(self, grace: float) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
