"""One access record + the Service directory -> dependency edges, or a typed rejection (pure).

Caller: the stream's own workload when an ordinary sidecar sends it (node metadata), else the
Services whose endpoints hold the entry's `downstream_direct_remote_address`; one edge per caller
Service. A caller is never guessed: an unknown address is a rejection, or, when
`Options.publish_unresolved` is on, one edge with `source_kind="unresolved"`, the caller's IP as
`source_name` and the `slime-source-ns` header (else `unknown`) as `source_namespace`.

Destination: the `:authority`, lower case, without trailing dot, port split off and kept, then
completed Slime's way: `svc` -> `svc.<caller ns>.svc.<domain>`; `svc.ns` and `svc.ns.svc` -> the
FQDN when Service `ns/svc` exists, else kept as written (an external host like `www.example.com`);
`svc.ns.svc.<domain>` stays. A host that is no Service is looked up in the Istio ServiceEntries
(exact host, else the longest `*.suffix` wildcard): a match is still `external=True` but carries
the ServiceEntry's namespace in `destination_namespace` (the event has no field of its own for
it; `destination_service` stays None, as the host is no Service); no match is a plain external
edge. An IP literal is a Service only through its ClusterIP. For TCP, the
original destination address must be a ClusterIP. Whatever comes out must pass
`hosts.is_valid_host`, so an invalid host is never published.

`Memo` lets a caller that derives many records against one directory state share the work:
the callers at an address (streams without a workload identity), destinations by
(authority, namespace) and events (with their edge keys: `prototypes`)
by (caller, destination, protocol).

Entries that never reached a destination are rejected as `UNROUTED`: Envoy found no route (NR, so
also "404 with NR"), no cluster (NC), could not resolve the host (DF), or refused the request
itself (IH, DPE, NFCF). Entries that were routed but failed upstream (UH, UF, UT, URX...) still
make an edge: the caller does depend on that destination, which may be down for now.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

from lazyload_common import events, hosts

from lazyload_accesslog_ingest.records import AccessRecord, Rejection, ServiceRef, StreamIdentity

UNROUTED_FLAGS = frozenset({"NR", "NC", "DF", "IH", "DPE", "NFCF"})
UNKNOWN_NAMESPACE = "unknown"
"""`source_namespace` of an unresolved caller that sent no (valid) `slime-source-ns` header."""
MAX_CLOCK_SKEW = 300.0
"""Seconds an entry's start time may lie ahead of this replica's clock (the sender's clock may
run a little ahead); later, or before 1970 (a negative time, year 0), it is impossible."""


def plausible_start(start: float | None, now: float) -> float | None:
    """`start` when it can be the start time of a request logged by `now`, else None (the
    caller uses the time of observation: an impossible time is never published)."""
    if start is None or not 0.0 <= start <= now + MAX_CLOCK_SKEW:  # NaN fails both
        return None
    return start


class Directory(Protocol):
    """What the domain needs to know about the cluster's Services (the index implements it)."""

    def services_at(self, ip: str) -> tuple[ServiceRef, ...]:
        """Services whose endpoints (ready or not) hold the pod address `ip`."""
        ...

    def service_at_cluster_ip(self, ip: str) -> ServiceRef | None:
        """The Service whose ClusterIP is `ip`."""
        ...

    def has_service(self, namespace: str, name: str) -> bool:
        """True when Service `namespace/name` exists."""
        ...

    def services_selecting(
        self, namespace: str, labels: Mapping[str, str]
    ) -> tuple[ServiceRef, ...]:
        """Services of `namespace` whose selector matches pods labelled `labels`."""
        ...

    def service_entry_for(self, host: str, namespace: str = "") -> ServiceRef | None:
        """The Istio ServiceEntry (`namespace/name`) declaring `host`, exactly or by wildcard,
        exported to `namespace` ("" = whichever)."""
        ...

    def service_entry_at(self, ip: str, namespace: str = "") -> tuple[ServiceRef, str] | None:
        """The ServiceEntry whose `addresses` hold `ip` (exported to `namespace`), with the host
        that address stands for."""
        ...


@dataclass(frozen=True, slots=True)
class Options:
    cluster_domain: str = "cluster.local"
    reporter: str = ""
    publish_unresolved: bool = False
    """Unknown callers give an `unresolved` edge instead of an `UNKNOWN_CALLER` rejection."""


class Caller(NamedTuple):
    """A caller Service (or workload, or unresolved address); named tuples, as these two are
    built, hashed and compared per new entry key (memo keys)."""

    namespace: str
    name: str
    kind: str = "service"


class Destination(NamedTuple):
    host: str
    port: int | None
    service: ServiceRef | None
    entry: ServiceRef | None = None
    """The ServiceEntry declaring the host, when it is no Service."""


Prototype = tuple[events.DependencyObserved, str]
"""An edge's event (with the times of the record that made it) and its `edge_key`."""


class Memo:
    """Callers, destinations and events already derived against one state of a directory (the
    owner `clear`s it when the directory changes). A remembered event keeps the times of the
    record that made it: users of a memo set `first_seen`/`observed_at` per sighting."""

    __slots__ = ("callers", "destinations", "events")

    def __init__(self) -> None:
        self.callers: dict[str, list[Caller] | Rejection] = {}
        """Caller address -> `resolve_callers` of a record from it on a stream without a
        workload identity (read only: the lists are shared)."""
        self.destinations: dict[tuple[str, str], Destination | Rejection] = {}
        self.events: dict[tuple[Caller, Destination, str], Prototype] = {}

    def __len__(self) -> int:
        return len(self.callers) + len(self.destinations) + len(self.events)

    def clear(self) -> None:
        self.callers.clear()
        self.destinations.clear()
        self.events.clear()


def derive(
    record: AccessRecord,
    identity: StreamIdentity | None,
    directory: Directory,
    options: Options,
    *,
    now: float,
    memo: Memo | None = None,
) -> list[events.DependencyObserved] | Rejection:
    """The edges `record` teaches (one per caller Service), or why it teaches none."""
    result = prototypes(record, identity, directory, options, now=now, memo=memo)
    if isinstance(result, Rejection):
        return result
    return [event for event, _ in result]


def prototypes(
    record: AccessRecord,
    identity: StreamIdentity | None,
    directory: Directory,
    options: Options,
    *,
    now: float,
    memo: Memo | None = None,
) -> list[Prototype] | Rejection:
    """`derive`, each edge as a `Prototype`: (event, its `edge_key`), the key remembered in
    `memo` with the event (the ingest's hot path)."""
    if memo is None:
        memo = Memo()
    workload = identity is not None and identity.is_workload
    if workload and record.direction == "inbound":
        return Rejection.INBOUND
    if record.response_flags & UNROUTED_FLAGS:
        return Rejection.UNROUTED
    if workload:
        callers = resolve_callers(record, identity, directory)
    else:  # the callers depend on the address alone
        callers = memo.callers.get(record.caller_ip)
        if callers is None:
            callers = memo.callers[record.caller_ip] = resolve_callers(record, None, directory)
    if record.proven_namespace and not isinstance(callers, Rejection):
        # behind the global-sidecar's proxy: only a Service of the namespace the caller's
        # certificate proves (`identity`)
        callers = [c for c in callers if c.namespace == record.proven_namespace] or (
            Rejection.UNPROVEN_CALLER
        )
    if isinstance(callers, Rejection):
        if callers is not Rejection.UNKNOWN_CALLER or not options.publish_unresolved:
            return callers
        callers = unresolved_caller(record)
        if isinstance(callers, Rejection):
            return callers
    edges: list[Prototype] = []
    protocol = record.protocol
    destinations, memo_events = memo.destinations, memo.events
    for caller in callers:
        namespace = caller.namespace or record.source_namespace_header
        if caller.kind == "unresolved":  # complete short names only with a namespace we know
            namespace = "" if caller.namespace == UNKNOWN_NAMESPACE else caller.namespace
        if protocol == "tcp":
            dest = tcp_destination(record, directory, options.cluster_domain, namespace)
        else:
            dest_key = (record.authority, namespace)
            dest = destinations.get(dest_key)
            if dest is None:
                dest = http_destination(
                    record.authority, namespace, directory, options.cluster_domain
                )
                destinations[dest_key] = dest
        if isinstance(dest, Rejection):
            return dest
        event_key = (caller, dest, protocol)
        prototype = memo_events.get(event_key)
        if prototype is None:
            refused = unpublishable(caller, dest)
            if refused is not None:
                return refused
            event = _event(record, caller, dest, options, now=now)
            prototype = memo_events[event_key] = (event, event.edge_key)
        edges.append(prototype)
    return edges


def unpublishable(caller: Caller, dest: Destination) -> Rejection | None:
    """The last check before an edge becomes an event: the destination is one valid FQDN (never
    a namespace or a wildcard, whichever path made it) and a caller that is no bare address has a
    namespace and a name Kubernetes could have given it (a sidecar's node metadata is the
    sender's word). None when the edge may be published."""
    if not hosts.is_valid_host(dest.host):
        return Rejection.INVALID_HOST
    if caller.kind != "unresolved" and not (
        hosts.is_valid_namespace(caller.namespace)
        and (hosts.is_valid_namespace(caller.name) or hosts.is_valid_host(caller.name))
    ):
        return Rejection.INVALID_CALLER
    return None


def resolve_callers(
    record: AccessRecord, identity: StreamIdentity | None, directory: Directory
) -> list[Caller] | Rejection:
    """The caller Services (or workload) of `record`; never a guess."""
    if identity is not None and identity.is_workload:
        refs = directory.services_selecting(identity.namespace, identity.labels)
        if refs:
            return [Caller(ref.namespace, ref.name) for ref in refs]
        if identity.workload:
            return [Caller(identity.namespace, identity.workload, "workload")]
        return Rejection.UNKNOWN_CALLER
    refs = directory.services_at(record.caller_ip)
    if not refs:
        return Rejection.UNKNOWN_CALLER
    return [Caller(ref.namespace, ref.name) for ref in refs]


def unresolved_caller(record: AccessRecord) -> list[Caller] | Rejection:
    """The `unresolved` caller of `record`: its IP, in the `slime-source-ns` namespace if valid."""
    ip = record.caller_ip.strip("[]")
    if not hosts.is_ip_literal(ip):
        return Rejection.UNKNOWN_CALLER
    header = record.source_namespace_header
    namespace = header if header and hosts.is_valid_namespace(header) else UNKNOWN_NAMESPACE
    return [Caller(namespace, ip, "unresolved")]


def normalise_authority(authority: str) -> tuple[str, int | None] | Rejection:
    """`Host[:port]` -> lower-case host without trailing dot, and the port (None if absent)."""
    text = authority.strip().lower()
    try:
        host, port = hosts.split_host_port(text)
    except ValueError:
        return Rejection.INVALID_HOST
    if host.endswith("."):
        host = host[:-1]
    return host, port


def http_destination(
    authority: str, namespace: str, directory: Directory, cluster_domain: str
) -> Destination | Rejection:
    """The completed destination of an HTTP `authority` called from `namespace`."""
    normalised = normalise_authority(authority)
    if isinstance(normalised, Rejection):
        return normalised
    host, port = normalised
    if _is_ip_literal(host):
        by_ip = _at_address(host.strip("[]"), port, namespace, directory, cluster_domain)
        return Rejection.IP_AUTHORITY if by_ip is None else by_ip
    if not hosts.is_valid_host(host):
        return Rejection.INVALID_HOST
    dest = complete(host, namespace, directory, cluster_domain, port)
    if dest is None:
        return Rejection.UNKNOWN_CALLER
    if not hosts.is_valid_host(dest.host):  # completion can make it too long
        return Rejection.INVALID_HOST
    return dest


def _is_ip_literal(host: str) -> bool:
    """`hosts.is_ip_literal`, without its raised-and-caught error for the usual DNS name: a host
    with no `:` (IPv6) that is not all digits and dots (IPv4) is no IP address."""
    bare = host.strip("[]")
    if ":" not in bare and not bare.replace(".", "").isdigit():
        return False
    return hosts.is_ip_literal(host)


def complete(
    host: str,
    namespace: str,
    directory: Directory,
    cluster_domain: str,
    port: int | None = None,
) -> Destination | None:
    """Complete a valid host name to a Service FQDN where Kubernetes DNS would (with `port`,
    which plays no part in it).

    None when `host` is a short name and the caller's namespace is unknown.
    """
    labels = host.split(".")
    suffix = f".svc.{cluster_domain}"
    if host.endswith(suffix) and len(labels) == 2 + suffix.count("."):
        return Destination(host, port, ServiceRef(labels[1], labels[0]))
    if len(labels) == 1:
        if not namespace:
            return None
        return _service(ServiceRef(namespace, host), port, cluster_domain)
    if len(labels) == 2 or (len(labels) == 3 and labels[2] == "svc"):
        ref = ServiceRef(labels[1], labels[0])
        if directory.has_service(*ref):
            return _service(ref, port, cluster_domain)
    return Destination(host, port, None, directory.service_entry_for(host, namespace))


def tcp_destination(
    record: AccessRecord, directory: Directory, cluster_domain: str, namespace: str = ""
) -> Destination | Rejection:
    """The Service whose ClusterIP the app dialled (TCP has no Host to go by), else the
    ServiceEntry whose `addresses` hold it (exported to the caller's `namespace`)."""
    dest = None
    if record.original_ip:
        port = record.original_port or None  # 0: no port (a socket address without one)
        dest = _at_address(record.original_ip, port, namespace, directory, cluster_domain)
    return Rejection.TCP_UNKNOWN_DESTINATION if dest is None else dest


def _at_address(
    ip: str, port: int | None, namespace: str, directory: Directory, cluster_domain: str
) -> Destination | None:
    """What an address dialled by a caller of `namespace` is: a Service by its ClusterIP, else
    the host of a ServiceEntry whose `addresses` hold it; None when neither."""
    ref = directory.service_at_cluster_ip(ip)
    if ref is not None:
        return _service(ref, port, cluster_domain)
    entry = directory.service_entry_at(ip, namespace)
    return None if entry is None else Destination(entry[1], port, None, entry[0])


def _service(ref: ServiceRef, port: int | None, cluster_domain: str) -> Destination:
    return Destination(hosts.service_fqdn(ref.name, ref.namespace, cluster_domain), port, ref)


_SOURCE_KINDS: dict[str, Literal["service", "workload", "unresolved"]] = {
    "service": "service",
    "workload": "workload",
    "unresolved": "unresolved",
}


def _event(
    record: AccessRecord, caller: Caller, dest: Destination, options: Options, *, now: float
) -> events.DependencyObserved:
    known = dest.service or dest.entry
    start = plausible_start(record.start_time, now)
    # `model_validate` of the fields is what the keyword constructor does, without its detour
    # through `__init__`: every value is still validated.
    return events.DependencyObserved.model_validate(
        {
            "source_namespace": caller.namespace,
            "source_name": caller.name,
            "source_kind": _SOURCE_KINDS.get(caller.kind, "service"),
            "destination_host": dest.host,
            "destination_port": dest.port,
            "destination_namespace": known.namespace if known else None,
            "destination_service": dest.service.name if dest.service else None,
            "external": dest.service is None,
            "protocol": record.protocol,
            "first_seen": now if start is None else start,
            "observed_at": now,
            "reporter": options.reporter,
        }
    )
