"""Plain values the domain works on: one access-log entry, one stream's identity, rejection reasons.

`parsing` builds them from the ALS protobufs; `edges` and `ingesting` read only these, so no
protobuf reaches the domain. Nothing here does I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

Protocol = Literal["http", "grpc", "tcp"]


class Rejection(enum.StrEnum):
    """Why an ALS message or entry produced no edge (the `reason` label of the rejected counter)."""

    MALFORMED_MESSAGE = "malformed_message"
    """The bytes are not a `StreamAccessLogsMessage`."""
    EMPTY_MESSAGE = "empty_message"
    """A message with neither an identifier nor entries (garbage that happened to parse)."""
    MISSING_CALLER = "missing_caller_address"
    """No `downstream_direct_remote_address` socket address."""
    MISSING_AUTHORITY = "missing_authority"
    """An HTTP entry without `request.authority`."""
    UNROUTED = "unrouted"
    """The request never reached a destination (NR, NC, DF... or a 404 with NR)."""
    UNKNOWN_CALLER = "unknown_caller"
    """The caller address maps to no Service and the stream names no workload."""
    IP_AUTHORITY = "ip_authority"
    """The authority is an IP that is no Service ClusterIP."""
    INVALID_HOST = "invalid_host"
    """The normalised authority is no valid DNS name (or its port is bad)."""
    UNPROVEN_CALLER = "unproven_caller"
    """The entry came through the global-sidecar's own proxy without the caller's address and its
    mTLS-proven namespace (`identity`), or the address is no Service of that namespace."""
    INVALID_CALLER = "invalid_caller"
    """The caller's namespace or name (an ordinary sidecar's node metadata) is no Kubernetes name."""
    INBOUND = "inbound"
    """An ordinary sidecar's inbound entry: it tells who called *this* workload, not whom it called."""
    TCP_UNKNOWN_DESTINATION = "tcp_unknown_destination"
    """A TCP entry whose original destination is no Service ClusterIP."""
    IDENTITY_MISMATCH = "identity_mismatch"
    """A stream on the mesh ALS port whose node claims another namespace than its mTLS
    certificate proves (or a global-sidecar's node without its service account): the stream is
    closed and this counts once per stream."""
    INTERNAL = "internal_error"
    """A bug: the entry raised while being turned into edges (logged with its traceback)."""


class ServiceRef(NamedTuple):
    """A Kubernetes Service, `namespace/name`."""

    namespace: str
    name: str


class AccessRecord(NamedTuple):
    """The parts of one HTTP or TCP access-log entry that an edge is made of (a named tuple: one
    is built per new entry key, and a tuple is the cheapest immutable value to build)."""

    protocol: Protocol
    caller_ip: str
    authority: str = ""
    """`request.authority` as logged (HTTP only), e.g. `details:9080`."""
    original_ip: str = ""
    """`downstream_local_address`: what the app dialled, on a capturing sidecar."""
    original_port: int | None = None
    upstream_cluster: str = ""
    response_flags: frozenset[str] = frozenset()
    """Envoy's short codes: NR, NC, UH, UF..."""
    response_code: int | None = None
    source_namespace_header: str = ""
    """The `slime-source-ns` request header, when logged."""
    start_time: float | None = None
    """Unix seconds of the request's start."""
    proven_namespace: str = ""
    """The caller's namespace as its mTLS certificate proves it, when the entry came through the
    global-sidecar's own istio-proxy (`identity`): the caller must be a Service there."""

    @property
    def direction(self) -> str:
        """`inbound`/`outbound` from an Istio cluster name (`outbound|9080||host`), else ``."""
        head, sep, _ = self.upstream_cluster.partition("|")
        return head if sep else ""


@dataclass(frozen=True, slots=True)
class StreamIdentity:
    """Who sends a stream: the `identifier` of its first message."""

    log_name: str = ""
    node_id: str = ""
    namespace: str = ""
    workload: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    global_sidecar: bool = False
    """True for the global-sidecar (its entries carry the caller's address, not its own)."""

    @property
    def is_workload(self) -> bool:
        """True when the caller of every entry is this ordinary sidecar's own workload."""
        return bool(self.namespace) and not self.global_sidecar
