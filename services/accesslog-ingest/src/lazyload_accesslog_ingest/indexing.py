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
SERVICE_ENTRIES_PATH = "/apis/networking.istio.io/v1/serviceentries"
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
        if event == "DELETED":
            return
        declared: set[str] = set()
        for raw in (obj.get("spec") or {}).get("hosts") or ():
            host = str(raw).strip().lower().rstrip(".")
            if host.startswith("*.") and hosts.is_valid_host(host[2:]):
                declared.add(host[1:])
            elif hosts.is_valid_host(host):
                declared.add(host)
        self._entry_hosts[ref] = frozenset(declared)
        for host in declared:
            table = self._wildcard_hosts if host.startswith(".") else self._exact_hosts
            table[host].add(ref)

    # --- edges.Directory ----------------------------------------------------------------------

    def services_at(self, ip: str) -> tuple[ServiceRef, ...]:
        return tuple(sorted(self._pods.get(ip, ())))

    def service_at_cluster_ip(self, ip: str) -> ServiceRef | None:
        return self._cluster_ips.get(ip)

    def has_service(self, namespace: str, name: str) -> bool:
        return ServiceRef(namespace, name) in self._services

    def service_entry_for(self, host: str) -> ServiceRef | None:
        """The ServiceEntry declaring `host`: an exact host first, else the longest wildcard.

        `*.example.com` matches `a.example.com` and `a.b.example.com`, not `example.com` (as in
        Istio). Several ServiceEntries with the same host: the first by namespace/name.
        """
        exact = self._exact_hosts.get(host)
        if exact:
            return min(exact)
        if not self._wildcard_hosts:
            return None
        dot = host.find(".")
        while dot >= 0:
            found = self._wildcard_hosts.get(host[dot:])
            if found:
                return min(found)
            dot = host.find(".", dot + 1)
        return None

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
