"""Settings of accesslog-ingest: the shared groups plus `grpc`, `dedup`, `publish` and `reporter`.

Environment variables follow the contract (`LAZYLOAD_` prefix, `__` nesting), for example
`LAZYLOAD_GRPC__PORT=0`, `LAZYLOAD_DEDUP__REFRESH_INTERVAL=60`, `LAZYLOAD_PUBLISH__BUFFER_SIZE=1000`,
`LAZYLOAD_REPORTER=ingest-0`. `check()` runs the cross-field checks before anything connects.
"""

from __future__ import annotations

import socket

from lazyload_common import errors, hosts
from lazyload_common import settings as common
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings


class GrpcSettings(BaseModel):
    """The gRPC Access Log Service listener that Envoy streams to."""

    host: str = Field("0.0.0.0", description="Address the ALS server binds.")
    port: int = Field(
        8082, ge=0, le=65535, description="ALS port; 8082 is Slime's logSourcePort; 0 = free port."
    )
    max_message_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1024,
        description="Largest ALS message accepted, bytes. Envoy batches 16 KiB by default; "
        "16 MiB leaves room for big batches without letting one stream eat the memory.",
    )
    shutdown_grace: float = Field(
        2.0, ge=0, description="Seconds open streams get to finish when the service stops."
    )


class DedupSettings(BaseModel):
    """Per-replica memory of the edges already published."""

    max_edges: int = Field(
        100_000,
        ge=1,
        description="Edges remembered (LRU). An edge that falls out is published again when next "
        "seen: more traffic on NATS, never a lost edge. 100k edges are a few tens of MiB.",
    )
    refresh_interval: float = Field(
        300.0,
        gt=0,
        description="Seconds; an edge still in use is published again at most once per interval, "
        "so consumers that lost state (or a new replica) learn it again.",
    )


class PublishSettings(BaseModel):
    """Publishing of edges to JetStream."""

    max_in_flight: int = Field(
        512, ge=1, description="Publishes waiting for a JetStream ack at the same time."
    )
    buffer_size: int = Field(
        100_000,
        ge=1,
        description="Edges held (queued or in flight) while NATS is slow or down; new edges past "
        "it are dropped and counted, and are offered again when next seen.",
    )
    ack_timeout: float = Field(5.0, gt=0, description="Seconds to wait for one JetStream ack.")
    retry_backoff_max: float = Field(
        2.0, gt=0, description="Longest pause, seconds, between retries after failed publishes."
    )
    drain_timeout: float = Field(
        3.0, ge=0, description="Seconds spent flushing the buffer when the service stops."
    )


class IngestSettings(BaseSettings):
    """Everything accesslog-ingest reads from the environment."""

    model_config = common.service_config()

    nats: common.NatsSettings = Field(default_factory=common.NatsSettings)
    kube: common.KubeSettings = Field(default_factory=common.KubeSettings)
    admin: common.AdminSettings = Field(default_factory=common.AdminSettings)
    mesh: common.MeshSettings = Field(default_factory=common.MeshSettings)
    grpc: GrpcSettings = Field(default_factory=GrpcSettings)
    dedup: DedupSettings = Field(default_factory=DedupSettings)
    publish: PublishSettings = Field(default_factory=PublishSettings)
    reporter: str = Field(
        default_factory=socket.gethostname,
        description="Id of this replica in the events it publishes (default: the host name).",
    )

    def check(self) -> None:
        """Raise `ConfigError` naming every setting that cannot work."""
        problems: list[str] = []
        if not hosts.is_valid_host(self.mesh.cluster_domain):
            problems.append(f"mesh.cluster_domain: not a DNS name: {self.mesh.cluster_domain!r}")
        if (
            self.grpc.port != 0
            and self.grpc.port == self.admin.port
            and self.grpc.host == self.admin.host
        ):
            problems.append(f"grpc.port: same as admin.port ({self.grpc.port})")
        if problems:
            raise errors.ConfigError("; ".join(problems))
