"""Kube adapter: Services, Endpoints, EndpointSlices and ServiceEntries -> `MeshState`, debounced.

`MeshWatcher` lists and watches the three kinds through `lazyload_common.kube.Reflector` (the
official client, by kubeconfig), keeps its own copy of each in the event loop, and `updates()`
yields a fresh `MeshState` per batch of changes: the first change opens a `debounce`-second window
that gathers the rest, so a burst renders once and a change never waits longer than the window.
The `*_from_raw` functions are the only place Kubernetes JSON is read; they are pure.
A Service's endpoints come from its EndpointSlices when it has any, else from its Endpoints.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterable
from typing import Any

from lazyload_common import kube

from lazyload_global_pilot.mesh import (
    EndpointGroup,
    EndpointPort,
    MeshState,
    Service,
    ServiceEntry,
    ServicePort,
)

RawObject = dict[str, Any]
Key = tuple[str, str]
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
PATHS = {
    "services": "/api/v1/services",
    "endpoints": "/api/v1/endpoints",
    "endpointslices": "/apis/discovery.k8s.io/v1/endpointslices",
    "serviceentries": "/apis/networking.istio.io/{version}/serviceentries",
}


def service_from_raw(raw: RawObject) -> Service | None:
    """The Service without endpoints; None for kinds global-pilot cannot route (ExternalName)."""
    meta, spec = raw.get("metadata") or {}, raw.get("spec") or {}
    if spec.get("type") == "ExternalName" or not meta.get("name"):
        return None
    ports = tuple(
        ServicePort(
            name=p.get("name") or "",
            port=int(p["port"]),
            protocol=p.get("protocol") or "TCP",
            target_port=p.get("targetPort"),
            app_protocol=p.get("appProtocol"),
        )
        for p in spec.get("ports") or ()
        if p.get("port") and (p.get("protocol") or "TCP") == "TCP"
    )
    return Service(
        namespace=meta.get("namespace") or "default",
        name=meta["name"],
        ports=ports,
        cluster_ip=spec.get("clusterIP") or None,
    )


def service_entry_from_raw(raw: RawObject) -> ServiceEntry | None:
    """The hosts, ports, resolution and endpoints of a ServiceEntry (None without hosts/ports).
    A workloadSelector entry has no endpoints of its own here: its hosts are routed as NONE."""
    meta, spec = raw.get("metadata") or {}, raw.get("spec") or {}
    ports = tuple(
        ServicePort(
            name=p.get("name") or "",
            port=int(p["number"]),
            protocol="TCP",
            target_port=p.get("targetPort"),
            app_protocol=(p.get("protocol") or "").lower() or None,
        )
        for p in spec.get("ports") or ()
        if p.get("number") and (p.get("protocol") or "TCP").upper() != "UDP"
    )
    hosts = tuple(h for h in spec.get("hosts") or () if isinstance(h, str) and h)
    if not meta.get("name") or not hosts or not ports:
        return None
    resolution = str(spec.get("resolution") or "NONE").upper()
    if resolution == "STATIC" and spec.get("workloadSelector"):
        resolution = "NONE"
    groups = tuple(
        EndpointGroup(
            addresses=(e["address"],),
            ports=tuple(
                EndpointPort(name=name, port=int(number))
                for name, number in (e.get("ports") or {}).items()
            ),
        )
        for e in spec.get("endpoints") or ()
        if e.get("address") and not str(e["address"]).startswith("unix://")
    )
    return ServiceEntry(
        namespace=meta.get("namespace") or "default",
        name=meta["name"],
        hosts=hosts,
        ports=ports,
        resolution=resolution,
        endpoints=groups,
    )


def groups_from_endpoints(raw: RawObject) -> tuple[EndpointGroup, ...]:
    """The ready subsets of an Endpoints object."""
    return tuple(
        EndpointGroup(
            addresses=tuple(a["ip"] for a in subset.get("addresses") or () if a.get("ip")),
            ports=_ports(subset.get("ports")),
        )
        for subset in raw.get("subsets") or ()
    )


def group_from_slice(raw: RawObject) -> EndpointGroup:
    """The ready addresses of an EndpointSlice (an endpoint without `ready: false` is ready)."""
    addresses = tuple(
        address
        for endpoint in raw.get("endpoints") or ()
        if (endpoint.get("conditions") or {}).get("ready") is not False
        for address in endpoint.get("addresses") or ()
    )
    return EndpointGroup(addresses=addresses, ports=_ports(raw.get("ports")))


def _ports(raw_ports: Iterable[RawObject] | None) -> tuple[EndpointPort, ...]:
    return tuple(
        EndpointPort(
            name=p.get("name") or "", port=int(p["port"]), protocol=p.get("protocol") or "TCP"
        )
        for p in raw_ports or ()
        if p.get("port")
    )


def build_mesh(
    services: Iterable[RawObject],
    endpoints: Iterable[RawObject],
    slices: Iterable[RawObject],
    service_entries: Iterable[RawObject] = (),
) -> MeshState:
    """Join Services with their endpoints into a `MeshState`."""
    by_endpoints = {kube.object_key(e): groups_from_endpoints(e) for e in endpoints}
    by_slices: dict[Key, list[EndpointGroup]] = {}
    for s in slices:
        meta = s.get("metadata") or {}
        owner = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if owner:
            by_slices.setdefault((meta.get("namespace") or "default", owner), []).append(
                group_from_slice(s)
            )
    result = []
    for raw in services:
        service = service_from_raw(raw)
        if service is None:
            continue
        key = (service.namespace, service.name)
        groups = tuple(by_slices[key]) if key in by_slices else by_endpoints.get(key, ())
        result.append(service.model_copy(update={"endpoints": groups}))
    entries = [e for e in map(service_entry_from_raw, service_entries) if e is not None]
    return MeshState.of(result, entries)


class MeshWatcher:
    """Watches the kinds in `kinds` (keys of PATHS) and yields debounced `MeshState`s."""

    def __init__(
        self,
        api: kube.KubeApi,
        *,
        kinds: Iterable[str] = ("services", "endpoints", "endpointslices"),
        debounce: float = 0.1,
    ) -> None:
        self.api, self.kinds, self.debounce = api, tuple(kinds), debounce
        self.stores: dict[str, dict[Key, RawObject]] = {k: {} for k in PATHS}
        self._synced: set[str] = set()
        self._dirty = asyncio.Event()
        self._reflectors: list[kube.Reflector] = []

    @property
    def synced(self) -> bool:
        """True once every watched kind has been listed."""
        return self._synced >= set(self.kinds)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for kind in self.kinds:
            reflector = kube.Reflector(
                self.api,
                PATHS[kind],
                on_change=lambda event, obj, kind=kind: self.apply(kind, event, obj),
                loop=loop,
                name=f"global-pilot:{kind}",
                versions=kube.ISTIO_VERSIONS if "{version}" in PATHS[kind] else (),
            )
            reflector.start()
            self._reflectors.append(reflector)

    def stop(self) -> None:
        for reflector in self._reflectors:
            reflector.stop()

    def apply(self, kind: str, event: str, obj: RawObject) -> None:
        """Take one reflector event (in the event loop): ADDED, MODIFIED, DELETED or SYNCED."""
        if event == "SYNCED":
            self._synced.add(kind)
        elif event == "DELETED":
            self.stores[kind].pop(kube.object_key(obj), None)
        else:
            self.stores[kind][kube.object_key(obj)] = obj
        if self.synced:
            self._dirty.set()

    def mesh(self) -> MeshState:
        stores = self.stores
        return build_mesh(
            stores["services"].values(),
            stores["endpoints"].values(),
            stores["endpointslices"].values(),
            stores["serviceentries"].values(),
        )

    async def updates(self) -> AsyncGenerator[MeshState]:
        """A `MeshState` per batch of changes (the first full sync included)."""
        while True:
            await self._dirty.wait()
            await asyncio.sleep(self.debounce)
            self._dirty.clear()
            yield self.mesh()
