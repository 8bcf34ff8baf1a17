"""Settings of accesslog-ingest: the shared groups plus `grpc`, `dedup`, `publish`, `edges`, `reporter`.

Environment variables follow the contract (`LAZYLOAD_` prefix, `__` nesting), for example
`LAZYLOAD_GRPC__PORT=0`, `LAZYLOAD_DEDUP__REFRESH_INTERVAL=60`, `LAZYLOAD_PUBLISH__BUFFER_SIZE=1000`,
`LAZYLOAD_REPORTER=ingest-0`. `check()` runs the cross-field checks before anything connects.
"""

from __future__ import annotations

import os
import socket
from typing import Literal

from lazyload_common import errors, hosts
from lazyload_common import settings as common
from pydantic import BaseModel, Field

from lazyload_accesslog_ingest import parsing


class GrpcSettings(BaseModel):
    """The gRPC Access Log Service listener that Envoy streams to."""

    host: str = Field(default="0.0.0.0", description="Address the ALS server binds.")
    port: int = Field(
        default=8082,
        ge=0,
        le=65535,
        description="ALS port; 8082 is Slime's logSourcePort; 0 = free port.",
    )
    max_message_bytes: int = Field(
        default=256 * 1024,
        ge=1024,
        description="Largest ALS message accepted, bytes (a larger one ends its stream, "
        "RESOURCE_EXHAUSTED, and Envoy opens a new one). Envoy batches 16 KiB by default "
        "(buffer_size_bytes): 256 KiB is 16 times that. max_streams x max_message_bytes must fit "
        "in message_memory_bytes.",
    )
    message_memory_bytes: int = Field(
        default=320 * 1024 * 1024,
        ge=1024,
        description="The most memory the messages of all open streams may take at once "
        "(max_streams x max_message_bytes, checked at start-up): 1024 x 256 KiB = 256 MiB fits "
        "the chart's 512 MiB limit with room for the index and the publisher's buffer.",
    )
    shutdown_grace: float = Field(
        default=2.0, ge=0, description="Seconds open streams get to finish when the service stops."
    )
    max_streams: int = Field(
        default=1024,
        ge=1,
        description="ALS streams open at once, over all connections and both ALS ports (port and "
        "mesh_port share it); a stream past it is refused "
        "(RESOURCE_EXHAUSTED, counted) and Envoy retries it later. Envoy opens about one stream "
        "per worker thread and log config, so 1024 is hundreds of global-sidecar replicas.",
    )
    stream_idle_timeout: float = Field(
        default=0.0,
        ge=0,
        description="Seconds a stream may send nothing before it is closed (counted); 0 = never. "
        "Envoy opens a new stream (with its identifier) at its next log, so closing is safe; it "
        "frees the slots of streams that hold them without sending.",
    )
    max_malformed_per_stream: int = Field(
        default=10,
        ge=1,
        description="Malformed messages a stream may send; each is counted and skipped, and the "
        "stream is closed (INVALID_ARGUMENT) when it reaches this many.",
    )
    tls_cert_file: str = Field(
        default="", description="PEM certificate chain of the ALS port; empty = plaintext gRPC."
    )
    tls_key_file: str = Field(default="", description="PEM private key of `tls_cert_file`.")
    tls_client_ca_file: str = Field(
        default="", description="PEM CA bundle that client certificates must chain to."
    )
    require_client_cert: bool = Field(
        default=False,
        description="Require and verify a client certificate (mutual TLS) against "
        "`tls_client_ca_file`; a client without a valid one cannot open a stream.",
    )
    mesh_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Second ALS port (plaintext gRPC on `host`) for ordinary sidecars, behind "
        "this pod's own istio-proxy with STRICT mTLS (the chart's sidecarAccessLogs): a stream "
        "must carry the proxy's x-forwarded-client-cert from loopback and its node must be in "
        "the certificate's namespace, else it is refused; unset = no such port; 0 = free port.",
    )
    mesh_global_sidecar_account: str = Field(
        default="global-sidecar",
        description="Service account whose streams on `mesh_port` may claim a global-sidecar's "
        "node (entries naming their callers by address); any other speaks only for its own "
        "namespace.",
    )

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert_file)


class EdgeSettings(BaseModel):
    """How entries become edges."""

    publish_unresolved: bool = Field(
        default=False,
        description="Publish an entry whose caller address maps to no Service as an edge with "
        '`source_kind="unresolved"` (source name = the IP, namespace = the slime-source-ns '
        "header or `unknown`), for observers; the reconciler ignores them. Off: dropped, counted.",
    )


class DedupSettings(BaseModel):
    """Per-replica memory of the edges already published."""

    max_edges: int = Field(
        default=100_000,
        ge=1,
        description="Edges remembered (LRU). An edge that falls out is published again when next "
        "seen: more traffic on NATS, never a lost edge. 100k edges are a few tens of MiB.",
    )
    refresh_interval: float = Field(
        default=300.0,
        gt=0,
        description="Seconds; an edge still in use is published again at most once per interval, "
        "so consumers that lost state (or a new replica) learn it again.",
    )


class PublishSettings(BaseModel):
    """Publishing of edges to JetStream."""

    max_in_flight: int = Field(
        default=512, ge=1, description="Publishes waiting for a JetStream ack at the same time."
    )
    buffer_size: int = Field(
        default=100_000,
        ge=1,
        description="Edges held (queued or in flight) while NATS is slow or down; new edges past "
        "it are dropped and counted, and are offered again when next seen.",
    )
    ack_timeout: float = Field(
        default=5.0, gt=0, description="Seconds to wait for one JetStream ack."
    )
    retry_backoff_max: float = Field(
        default=2.0,
        gt=0,
        description="Longest pause, seconds, between retries after failed publishes.",
    )
    drain_timeout: float = Field(
        default=3.0, ge=0, description="Seconds spent flushing the buffer when the service stops."
    )


class IngestSettings(common.NatsServiceSettings):
    """Everything accesslog-ingest reads from the environment."""

    grpc: GrpcSettings = Field(default_factory=GrpcSettings)
    dedup: DedupSettings = Field(default_factory=DedupSettings)
    publish: PublishSettings = Field(default_factory=PublishSettings)
    edges: EdgeSettings = Field(default_factory=EdgeSettings)
    reporter: str = Field(
        default_factory=socket.gethostname,
        description="Id of this replica in the events it publishes (default: the host name).",
    )
    decoder: Literal["auto", "compiled", "protobuf"] = Field(
        default="auto",
        description="How ALS messages are read: `compiled` (the C decoder built with the "
        "package), `protobuf` (the protobuf runtime, about 4x slower per entry), `auto` (compiled "
        "when it was built). The active one is the `decoder` label of `lazyload_ingest_decoder_info`.",
    )

    def check(self) -> None:
        """Raise `ConfigError` naming every setting that cannot work."""
        problems: list[str] = []
        if self.decoder == "compiled" and not parsing.COMPILED:
            problems.append("decoder: `compiled` was not built with this install (no C compiler?)")
        if not hosts.is_valid_host(self.mesh.cluster_domain):
            problems.append(f"mesh.cluster_domain: not a DNS name: {self.mesh.cluster_domain!r}")
        if (
            self.grpc.port != 0
            and self.grpc.port == self.admin.port
            and self.grpc.host == self.admin.host
        ):
            problems.append(f"grpc.port: same as admin.port ({self.grpc.port})")
        if self.grpc.mesh_port and self.grpc.mesh_port in (self.grpc.port, self.admin.port):
            problems.append(
                f"grpc.mesh_port: same as grpc.port or admin.port ({self.grpc.mesh_port})"
            )
        problems.extend(_tls_problems(self.grpc))
        worst = self.grpc.max_streams * self.grpc.max_message_bytes
        if worst > self.grpc.message_memory_bytes:
            problems.append(
                f"grpc.max_streams x grpc.max_message_bytes = {worst} bytes: more than "
                f"grpc.message_memory_bytes ({self.grpc.message_memory_bytes}); lower one of them "
                "(or raise the budget with the memory limit)"
            )
        if problems:
            raise errors.ConfigError("; ".join(problems))


def _tls_problems(grpc: GrpcSettings) -> list[str]:
    problems: list[str] = []
    if bool(grpc.tls_cert_file) != bool(grpc.tls_key_file):
        problems.append("grpc.tls_cert_file and grpc.tls_key_file: set both or neither")
    if (grpc.tls_client_ca_file or grpc.require_client_cert) and not grpc.tls:
        problems.append("grpc.tls_client_ca_file/require_client_cert: need grpc.tls_cert_file")
    if grpc.require_client_cert and not grpc.tls_client_ca_file:
        problems.append("grpc.require_client_cert: needs grpc.tls_client_ca_file")
    if grpc.tls_client_ca_file and not grpc.require_client_cert:
        problems.append("grpc.tls_client_ca_file: only used with grpc.require_client_cert=true")
    for name in ("tls_cert_file", "tls_key_file", "tls_client_ca_file"):
        path = getattr(grpc, name)
        if path and not os.path.isfile(path):
            problems.append(f"grpc.{name}: no such file: {path!r}")
    return problems
