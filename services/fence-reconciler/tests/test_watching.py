"""`watching.Cluster.subscribe` against the test API server: every subscribed listener is told each
change, and a Service change has dropped the cached mesh snapshot by the time listeners hear of it
(so a listener that reads `mesh()` sees the new Service)."""

from __future__ import annotations

import asyncio
from typing import Any

from lazyload_common import hosts, kube
from lazyload_fence_reconciler import watching


class Recorder:
    """A listener that keeps what it was told, and the mesh it read when told of a Service."""

    def __init__(self, cluster: watching.Cluster) -> None:
        self.cluster = cluster
        self.seen: list[tuple[str, str, tuple[str, str]]] = []
        self.mesh_services: set[str] = set()

    def _note(self, resource: str, kind: str, obj: kube.RawObject) -> None:
        if kind != "SYNCED":
            self.seen.append((resource, kind, kube.object_key(obj)))

    def on_fence_event(self, kind: str, obj: kube.RawObject) -> None:
        self._note("fence", kind, obj)

    def on_service_event(self, kind: str, obj: kube.RawObject) -> None:
        self._note("service", kind, obj)
        self.mesh_services = {fqdn for fqdn, _ in self.cluster.mesh().services}

    def on_namespace_event(self, kind: str, obj: kube.RawObject) -> None:
        self._note("namespace", kind, obj)

    def on_virtual_service_event(self, kind: str, obj: kube.RawObject) -> None:
        self._note("virtualservice", kind, obj)

    def on_pod_event(self, kind: str, obj: kube.RawObject) -> None:
        self._note("pod", kind, obj)


async def test_every_listener_hears_each_change_after_the_mesh_was_dropped(
    kube_api: kube.KubeApi, kit: Any
) -> None:
    cluster = watching.Cluster(kube_api, asyncio.get_running_loop(), watch_timeout=5)
    first, second = Recorder(cluster), Recorder(cluster)
    cluster.subscribe(first)
    cluster.subscribe(second)
    cluster.start()
    try:
        await asyncio.wait_for(cluster.wait_synced(), timeout=20)
        fqdn = hosts.service_fqdn("watched", "default", cluster.cluster_domain)
        assert fqdn not in {name for name, _ in cluster.mesh().services}  # cached now
        kit.create_service("watched")
        added = ("service", "ADDED", ("default", "watched"))
        await kit.eventually(lambda: added in first.seen and added in second.seen)
        assert fqdn in first.mesh_services and fqdn in second.mesh_services
        assert first.seen == second.seen
    finally:
        cluster.stop()
