"""What the reconciler knows of the cluster: Reflectors over ServiceFences, Services, Namespaces,
Istio VirtualServices and ServiceEntries.

`mesh()` is the snapshot `desiring` expands fences with (VirtualService routes, Services and their
labels, alias rules), rebuilt only after a VirtualService or Service changed.

The stores are read-only caches (a write may be newer than them: `applying` handles the 409);
changes are handed, in the event loop, to every `Listener` that `subscribe`d (before `start`).
Nothing here writes to the API.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Protocol

from lazyload_common import hosts, kube

from lazyload_fence_reconciler import expanding, fences, policies

FENCES_PATH = f"/apis/{fences.GROUP}/{fences.VERSION}/{fences.PLURAL}"
SERVICES_PATH = "/api/v1/services"
NAMESPACES_PATH = "/api/v1/namespaces"
VIRTUAL_SERVICES_PATH = "/apis/networking.istio.io/{version}/virtualservices"
PODS_PATH = "/api/v1/pods"
SERVICE_ENTRIES_PATH = "/apis/networking.istio.io/{version}/serviceentries"
TOMBSTONES_PATH = "/api/v1/namespaces/{namespace}/configmaps"
TOMBSTONES_SELECTOR = "lazyload.io/store=fence-tombstones"
"""The label of the ConfigMap that keeps the tombstones of deleted manual fences (`tombstoning`)."""
Key = tuple[str, str]
OnChange = Callable[[str, kube.RawObject], None]


class Listener(Protocol):
    """What is told about changes (`kind` is ADDED, MODIFIED, DELETED or SYNCED)."""

    def on_fence_event(self, kind: str, obj: kube.RawObject) -> None: ...
    def on_service_event(self, kind: str, obj: kube.RawObject) -> None: ...
    def on_namespace_event(self, kind: str, obj: kube.RawObject) -> None: ...
    def on_virtual_service_event(self, kind: str, obj: kube.RawObject) -> None: ...
    def on_pod_event(self, kind: str, obj: kube.RawObject) -> None: ...


class Cluster:
    """Five reflectors (six with workload pods) and typed reads of their stores."""

    def __init__(
        self,
        api: kube.KubeApi,
        loop: asyncio.AbstractEventLoop,
        *,
        cluster_domain: str = "cluster.local",
        aliases: tuple[expanding.Alias, ...] = (),
        stable_hosts: tuple[str, ...] = (),
        workload_key: str | None = None,
        watch_timeout: int = 60,
        tombstone_map: Key | None = None,
    ) -> None:
        def reflector(
            path: str,
            on_change: OnChange,
            name: str,
            selector: str | None = None,
            transform: Callable[[kube.RawObject], kube.RawObject] | None = None,
        ) -> kube.Reflector:
            return kube.Reflector(
                api,
                path,
                on_change=on_change,
                loop=loop,
                label_selector=selector,
                watch_timeout=watch_timeout,
                name=name,
                transform=transform,
                versions=kube.ISTIO_VERSIONS if "{version}" in path else (),
            )

        self._listeners: list[Listener] = []
        tell = self._fan_out
        # the store keeps statuses packed: 10,000 fences of 10 hosts in ~45 MB instead of ~200
        self.fences = reflector(
            FENCES_PATH, tell(lambda x: x.on_fence_event), "servicefences", None, fences.pack_status
        )
        self.cluster_domain, self.aliases = cluster_domain, aliases
        self.stable_hosts = stable_hosts
        self._mesh: expanding.Mesh | None = None
        self._entry_hosts: frozenset[str] | None = None
        self.services = reflector(
            SERVICES_PATH, tell(lambda x: x.on_service_event, invalidates=True), "services"
        )
        self.namespaces = reflector(
            NAMESPACES_PATH, tell(lambda x: x.on_namespace_event), "namespaces"
        )
        self.virtual_services = reflector(
            VIRTUAL_SERVICES_PATH,
            tell(lambda x: x.on_virtual_service_event, invalidates=True),
            "virtualservices",
        )
        self.service_entries = reflector(
            SERVICE_ENTRIES_PATH, tell(None, invalidates=True), "serviceentries"
        )
        self.workload_key = workload_key
        self.pods = (
            reflector(PODS_PATH, tell(lambda x: x.on_pod_event), "pods", workload_key)
            if workload_key
            else None
        )
        # the tombstones' ConfigMap (namespace, name): a label-selected watch in that namespace
        self.tombstone_map = tombstone_map
        self.tombstone_maps = (
            reflector(
                TOMBSTONES_PATH.format(namespace=tombstone_map[0]),
                tell(None),
                "tombstones",
                TOMBSTONES_SELECTOR,
            )
            if tombstone_map
            else None
        )
        self._all = (
            self.fences,
            self.services,
            self.namespaces,
            self.virtual_services,
            self.service_entries,
            *((self.pods,) if self.pods else ()),
            *((self.tombstone_maps,) if self.tombstone_maps else ()),
        )

    def subscribe(self, listener: Listener) -> None:
        """Tell `listener` every change from now on (subscribe before `start`: the first list of
        each resource arrives as ADDED events, then SYNCED)."""
        self._listeners.append(listener)

    def _fan_out(
        self, method: Callable[[Listener], OnChange] | None, *, invalidates: bool = False
    ) -> OnChange:
        """A reflector callback: drop the derived caches when they depend on the resource, then
        tell each listener through `method`."""

        def handle(kind: str, obj: kube.RawObject) -> None:
            if invalidates:
                self._mesh = None
                self._entry_hosts = None
            if method is not None:
                for listener in self._listeners:
                    method(listener)(kind, obj)

        return handle

    def start(self) -> None:
        for reflector in self._all:
            reflector.start()

    def stop(self) -> None:
        for reflector in self._all:
            reflector.stop()

    async def wait_synced(self) -> None:
        for reflector in self._all:
            await reflector.synced.wait()

    def synced(self) -> bool:
        return all(r.synced.is_set() for r in self._all)

    # The stores are replaced or updated by the reflector threads: read them through copies.

    def fence(self, key: Key) -> kube.RawObject | None:
        return self.fences.store.get(key)

    def fence_keys(self, namespace: str | None = None) -> list[Key]:
        return sorted(k for k in self.fences.store.copy() if namespace is None or k[0] == namespace)

    def service_keys(self, namespace: str | None = None) -> list[Key]:
        keys = self.services.store.copy()
        return sorted(k for k in keys if namespace is None or k[0] == namespace)

    def all_fences(self) -> list[kube.RawObject]:
        store = self.fences.store.copy()
        return [store[k] for k in sorted(store)]

    def service(self, key: Key) -> policies.ServiceFacts | None:
        obj = self.services.store.get(key)
        if obj is None:
            return None
        meta = obj.get("metadata", {})
        selector = obj.get("spec", {}).get("selector") or {}
        return policies.ServiceFacts(
            labels=dict(meta.get("labels") or {}),
            selector=dict(selector),
            annotations=dict(meta.get("annotations") or {}),
        )

    def service_uid(self, key: Key) -> str | None:
        """The uid of Service `key`; None when there is no such Service."""
        obj = self.services.store.get(key)
        return None if obj is None else str(obj.get("metadata", {}).get("uid") or "")

    def tombstone_entries(self) -> Mapping[str, str] | None:
        """The data of the tombstones' ConfigMap, read-only and not copied (every reconcile asks
        it); None when it does not exist (or is not watched)."""
        if self.tombstone_maps is None or self.tombstone_map is None:
            return None
        obj = self.tombstone_maps.store.get(self.tombstone_map)
        return None if obj is None else MappingProxyType(obj.get("data") or {})

    def selector(self, key: Key) -> dict[str, str] | None:
        service = self.service(key)
        return dict(service.selector) if service and service.selector else None

    def mesh(self) -> expanding.Mesh:
        """The expansion snapshot (cached until a VirtualService or Service changes)."""
        if self._mesh is None:
            services = self.services.store.copy()
            vs = self.virtual_services.store.copy()
            self._mesh = expanding.Mesh(
                cluster_domain=self.cluster_domain,
                routes=expanding.routes_from_virtual_services(vs.values(), self.cluster_domain),
                services=tuple(
                    (
                        hosts.service_fqdn(name, ns, self.cluster_domain),
                        dict(obj.get("metadata", {}).get("labels") or {}),
                    )
                    for (ns, name), obj in sorted(services.items())
                ),
                aliases=self.aliases,
                stable_hosts=self.stable_hosts,
            )
        return self._mesh

    def service_entry_hosts(self) -> frozenset[str]:
        if self._entry_hosts is None:
            self._entry_hosts = frozenset(
                str(h).lower()
                for obj in self.service_entries.store.copy().values()
                for h in (obj.get("spec") or {}).get("hosts") or []
            )
        return self._entry_hosts

    def workload_pods(self, namespace: str, value: str) -> int:
        """Pods of `namespace` whose workload label (`workload_key`) is `value`."""
        if self.pods is None or self.workload_key is None:
            return 0
        key = self.workload_key
        return sum(
            1
            for (ns, _), pod in self.pods.store.copy().items()
            if ns == namespace and (pod.get("metadata", {}).get("labels") or {}).get(key) == value
        )

    def namespace_labels(self, namespace: str) -> Mapping[str, str]:
        obj = self.namespaces.store.get(("", namespace))
        return dict((obj or {}).get("metadata", {}).get("labels") or {})
