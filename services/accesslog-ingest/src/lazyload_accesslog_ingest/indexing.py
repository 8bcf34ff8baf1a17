"""The Service directory: pod IP -> Service(s), ClusterIP -> Service, Services and their selectors,
and the hosts Istio ServiceEntries declare (exact names and `*.suffix` wildcards).

`ServiceIndex` is fed raw Kubernetes objects (Endpoints, EndpointSlices, Services, ServiceEntries)
one watch event
at a time and answers the domain's `edges.Directory` questions. An address contributed by several
objects (the Endpoints and the EndpointSlice of one Service) is reference-counted, so removing one
keeps the other. `KubeIndexer` feeds it from `lazyload_common.kube.Reflector`s; tests feed it plain
dicts. It never talks to NATS or gRPC.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lazyload_common import hosts, kube

from lazyload_accesslog_ingest.records import ServiceRef

log = logging.getLogger(__name__)
RawObject = dict[str, Any]

ENDPOINTS_PATH = "/api/v1/endpoints"
ENDPOINT_SLICES_PATH = "/apis/discovery.k8s.io/v1/endpointslices"
SERVICES_PATH = "/api/v1/services"
SERVICE_ENTRIES_PATH = "/apis/networking.istio.io/{version}/serviceentries"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclass(frozen=True, slots=True)
class _ServiceInfo:
    cluster_ips: frozenset[str]
    selector: Mapping[str, str]


class ServiceIndex:
    """In-memory answers to "which Services are at this IP" and "does this Service exist"."""

    def __init__(self) -> None:
        self.version = 0
        """Bumped by every change; `ingesting` drops its derived-edge caches when it moves."""
        self._pods: dict[str, dict[ServiceRef, int]] = defaultdict(dict)
        self._contributions: dict[tuple[str, str, str], tuple[ServiceRef, frozenset[str]]] = {}
        self._services: dict[ServiceRef, _ServiceInfo] = {}
        self._cluster_ips: dict[str, ServiceRef] = {}
        self._by_namespace: dict[str, set[ServiceRef]] = defaultdict(set)
        self._entry_hosts: dict[ServiceRef, frozenset[str]] = {}
        self._exact_hosts: dict[str, set[ServiceRef]] = defaultdict(set)
        self._wildcard_hosts: dict[str, set[ServiceRef]] = defaultdict(set)
        """`*.example.com` is kept as `.example.com` -> ServiceEntries."""
        self._entry_exports: dict[ServiceRef, frozenset[str] | None] = {}
        """Namespaces a ServiceEntry is visible to (`exportTo`); None = every namespace."""
        self._entry_networks: dict[ServiceRef, tuple[str, tuple[IPNetwork, ...]]] = {}
        """ServiceEntries with `addresses`: their first concrete host and their networks."""

    # --- feeding ------------------------------------------------------------------------------

    def apply_endpoints(self, event: str, obj: RawObject) -> None:
        """An Endpoints watch event: its subsets' addresses and notReadyAddresses."""
        self.version += 1
        namespace, name = kube.object_key(obj)
        ips: set[str] = set()
        for subset in obj.get("subsets") or ():
            for field in ("addresses", "notReadyAddresses"):
                ips.update(str(a.get("ip", "")) for a in subset.get(field) or () if a)
        self._contribute(("endpoints", namespace, name), ServiceRef(namespace, name), ips, event)

    def apply_endpoint_slice(self, event: str, obj: RawObject) -> None:
        """An EndpointSlice watch event: the addresses of all its endpoints (ready or not)."""
        self.version += 1
        namespace, name = kube.object_key(obj)
        service = (obj.get("metadata", {}).get("labels") or {}).get(SERVICE_NAME_LABEL, "")
        ips: set[str] = set()
        for endpoint in obj.get("endpoints") or ():
            ips.update(str(a) for a in endpoint.get("addresses") or ())
        key = ("slices", namespace, name)
        self._contribute(key, ServiceRef(namespace, service), ips if service else set(), event)

    def apply_service(self, event: str, obj: RawObject) -> None:
        """A Service watch event: it exists, its ClusterIPs and its selector."""
        self.version += 1
        ref = ServiceRef(*kube.object_key(obj))
        self._forget_service(ref)
        if event == "DELETED":
            return
        spec = obj.get("spec") or {}
        ips = {str(ip) for ip in [spec.get("clusterIP"), *(spec.get("clusterIPs") or ())] if ip}
        ips = {ip for ip in ips if hosts.is_ip_literal(ip)}
        selector = {str(k): str(v) for k, v in (spec.get("selector") or {}).items()}
        self._services[ref] = _ServiceInfo(frozenset(ips), selector)
        self._by_namespace[ref.namespace].add(ref)
        for ip in ips:
            self._cluster_ips[ip] = ref

    def apply_service_entry(self, event: str, obj: RawObject) -> None:
        """A ServiceEntry watch event: the hosts it declares (`spec.hosts`, exact or `*.suffix`).

        Hosts that are neither a valid DNS name nor a `*.` wildcard over one (`*` alone included)
        are ignored: they could never match a valid authority anyway.
        """
        self.version += 1
        ref = ServiceRef(*kube.object_key(obj))
        for host in self._entry_hosts.pop(ref, ()):
            table = self._wildcard_hosts if host.startswith(".") else self._exact_hosts
            table[host].discard(ref)
            if not table[host]:
                del table[host]
        self._entry_exports.pop(ref, None)
        self._entry_networks.pop(ref, None)
        if event == "DELETED":
            return
        spec = obj.get("spec") or {}
        declared: set[str] = set()
        concrete: list[str] = []
        for raw in spec.get("hosts") or ():
            host = str(raw).strip().lower().rstrip(".")
            if host.startswith("*.") and hosts.is_valid_host(host[2:]):
                declared.add(host[1:])
            elif hosts.is_valid_host(host):
                declared.add(host)
                concrete.append(host)
        self._entry_hosts[ref] = frozenset(declared)
        for host in declared:
            table = self._wildcard_hosts if host.startswith(".") else self._exact_hosts
            table[host].add(ref)
        self._entry_exports[ref] = _exports(spec.get("exportTo"), ref.namespace)
        networks = tuple(n for n in map(_network, spec.get("addresses") or ()) if n is not None)
        if networks and concrete:  # an address stands for a host; all-wildcard entries name none
            self._entry_networks[ref] = (concrete[0], networks)

    # --- edges.Directory ----------------------------------------------------------------------

    def services_at(self, ip: str) -> tuple[ServiceRef, ...]:
        return tuple(sorted(self._pods.get(ip, ())))

    def service_at_cluster_ip(self, ip: str) -> ServiceRef | None:
        return self._cluster_ips.get(ip)

    def has_service(self, namespace: str, name: str) -> bool:
        return ServiceRef(namespace, name) in self._services

    def service_entry_for(self, host: str, namespace: str = "") -> ServiceRef | None:
        """The ServiceEntry declaring `host` that `namespace` may see (`exportTo`; "" = any):
        an exact host first, else the longest wildcard.

        `*.example.com` matches `a.example.com` and `a.b.example.com`, not `example.com` (as in
        Istio). Several ServiceEntries with the same host: the first by namespace/name.
        """
        exact = self._visible(self._exact_hosts.get(host), namespace)
        if exact is not None:
            return exact
        if not self._wildcard_hosts:
            return None
        dot = host.find(".")
        while dot >= 0:
            found = self._visible(self._wildcard_hosts.get(host[dot:]), namespace)
            if found is not None:
                return found
            dot = host.find(".", dot + 1)
        return None

    def service_entry_at(self, ip: str, namespace: str = "") -> tuple[ServiceRef, str] | None:
        """The ServiceEntry whose `addresses` (IPs or CIDRs) hold `ip` and that `namespace` may
        see, with the host the address stands for (its first non-wildcard host); the most
        specific network wins, then the first by namespace/name."""
        if not self._entry_networks:
            return None
        try:
            address = ipaddress.ip_address(ip.strip("[]"))
        except ValueError:
            return None
        best: tuple[int, ServiceRef, str] | None = None
        for ref, (host, networks) in self._entry_networks.items():
            if not self._exported(ref, namespace):
                continue
            for network in networks:
                if address.version == network.version and address in network:
                    rank = (-network.prefixlen, ref, host)
                    if best is None or rank < best:
                        best = rank
        return (best[1], best[2]) if best is not None else None

    def _visible(self, refs: set[ServiceRef] | None, namespace: str) -> ServiceRef | None:
        if not refs:
            return None
        seen = [ref for ref in refs if self._exported(ref, namespace)]
        return min(seen) if seen else None

    def _exported(self, ref: ServiceRef, namespace: str) -> bool:
        exports = self._entry_exports.get(ref)
        return not namespace or exports is None or namespace in exports

    def services_selecting(
        self, namespace: str, labels: Mapping[str, str]
    ) -> tuple[ServiceRef, ...]:
        found = [
            ref
            for ref in self._by_namespace.get(namespace, ())
            if (selector := self._services[ref].selector)
            and all(labels.get(k) == v for k, v in selector.items())
        ]
        return tuple(sorted(found))

    # --- internals ----------------------------------------------------------------------------

    def _contribute(
        self, key: tuple[str, str, str], ref: ServiceRef, ips: Iterable[str], event: str
    ) -> None:
        old = self._contributions.pop(key, None)
        if old is not None:
            old_ref, old_ips = old
            for ip in old_ips:
                self._release(ip, old_ref)
        if event == "DELETED":
            return
        fresh = frozenset(ip for ip in ips if hosts.is_ip_literal(ip))
        if not fresh:
            return
        self._contributions[key] = (ref, fresh)
        for ip in fresh:
            refs = self._pods[ip]
            refs[ref] = refs.get(ref, 0) + 1

    def _release(self, ip: str, ref: ServiceRef) -> None:
        refs = self._pods.get(ip)
        if not refs or ref not in refs:
            return
        refs[ref] -= 1
        if refs[ref] <= 0:
            del refs[ref]
        if not refs:
            del self._pods[ip]

    def _forget_service(self, ref: ServiceRef) -> None:
        info = self._services.pop(ref, None)
        if info is None:
            return
        self._by_namespace[ref.namespace].discard(ref)
        for ip in info.cluster_ips:
            if self._cluster_ips.get(ip) == ref:
                del self._cluster_ips[ip]


class KubeIndexer:
    """Feeds a `ServiceIndex` from list+watch of Endpoints, EndpointSlices, Services and Istio
    ServiceEntries.

    Synced once Endpoints and Services are listed. EndpointSlices and ServiceEntries are
    best-effort: a cluster (or emulator) that does not serve them (no Istio CRDs) must not keep
    the service unready; until ServiceEntries are listed their hosts are plain external edges.
    """

    def __init__(
        self,
        api: kube.KubeApi,
        index: ServiceIndex,
        *,
        loop: asyncio.AbstractEventLoop,
        watch_timeout: int = 60,
    ) -> None:
        self.index = index
        sources = (
            ("endpoints", ENDPOINTS_PATH, index.apply_endpoints),
            ("services", SERVICES_PATH, index.apply_service),
            ("endpointslices", ENDPOINT_SLICES_PATH, index.apply_endpoint_slice),
            ("serviceentries", SERVICE_ENTRIES_PATH, index.apply_service_entry),
        )
        self.reflectors = {
            name: kube.Reflector(
                api,
                path,
                on_change=_ignore_synced(apply),
                loop=loop,
                watch_timeout=watch_timeout,
                name=f"ingest-{name}",
                versions=kube.ISTIO_VERSIONS if "{version}" in path else (),
            )
            for name, path, apply in sources
        }

    def start(self) -> None:
        for reflector in self.reflectors.values():
            reflector.start()

    def stop(self) -> None:
        for reflector in self.reflectors.values():
            reflector.stop()

    def synced(self) -> bool:
        return all(self.reflectors[name].synced.is_set() for name in ("endpoints", "services"))

    async def wait_synced(self) -> None:
        await self.reflectors["endpoints"].synced.wait()
        await self.reflectors["services"].synced.wait()


def _ignore_synced(apply: Callable[[str, RawObject], None]) -> Callable[[str, RawObject], None]:
    def on_change(event: str, obj: RawObject) -> None:
        if event in ("ADDED", "MODIFIED", "DELETED"):
            apply(event, obj)

    return on_change


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _exports(raw: object, own: str) -> frozenset[str] | None:
    """`exportTo` as the namespaces that see the entry: None = all (absent, empty or `*`);
    `.` is the entry's own namespace, `~` none."""
    if not isinstance(raw, list) or not raw:
        return None
    names = {str(n).strip() for n in raw}
    if "*" in names:
        return None
    return frozenset(own if n == "." else n for n in names if n and n != "~")


def _network(raw: object) -> IPNetwork | None:
    """A ServiceEntry address (an IP or a CIDR) as a network; None when it is neither."""
    try:
        return ipaddress.ip_network(str(raw).strip(), strict=False)
    except ValueError:
        return None
