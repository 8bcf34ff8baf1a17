"""The Service index fed with raw Kubernetes objects (plain dicts), and fed by reflectors.

- Endpoints: ready and not-ready addresses; updates replace, deletes remove;
- EndpointSlices: the `kubernetes.io/service-name` label names the Service; slices without it
  are ignored; non-IP addresses are ignored;
- an address from both the Endpoints and a slice of one Service is reference-counted;
- a pod in several Services maps to all of them;
- Services: existence, ClusterIP(s) (not `None`), selectors for node-metadata callers;
- `KubeIndexer` over `lazyload_common.kube.Reflector` with a fake `KubeApi` (our own wrapper):
  lists, watches, and is synced without EndpointSlices being served.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

from lazyload_accesslog_ingest import indexing
from lazyload_accesslog_ingest.records import ServiceRef
from lazyload_common import kube
from lazyload_testing import ingest as t

PP = ServiceRef("default", "productpage")
FE = ServiceRef("default", "frontend")


def test_endpoints_ready_and_not_ready() -> None:
    index = indexing.ServiceIndex()
    index.apply_endpoints(
        "ADDED", t.endpoints("default", "productpage", ["10.0.0.1"], ["10.0.0.2"])
    )
    assert index.services_at("10.0.0.1") == (PP,)
    assert index.services_at("10.0.0.2") == (PP,)
    assert index.services_at("10.0.0.3") == ()


def test_endpoints_update_and_delete() -> None:
    index = indexing.ServiceIndex()
    index.apply_endpoints("ADDED", t.endpoints("default", "productpage", ["10.0.0.1"]))
    index.apply_endpoints("MODIFIED", t.endpoints("default", "productpage", ["10.0.0.2"]))
    assert index.services_at("10.0.0.1") == ()
    assert index.services_at("10.0.0.2") == (PP,)
    index.apply_endpoints("DELETED", t.endpoints("default", "productpage", ["10.0.0.2"]))
    assert index.services_at("10.0.0.2") == ()


def test_endpoints_without_subsets_or_odd_entries() -> None:
    index = indexing.ServiceIndex()
    index.apply_endpoints("ADDED", {"metadata": {"namespace": "a", "name": "b"}})
    index.apply_endpoints(
        "ADDED",
        {
            "metadata": {"namespace": "a", "name": "c"},
            "subsets": [
                {"addresses": [{"hostname": "x"}, {"ip": "not-an-ip"}, {"ip": "10.0.0.9"}]}
            ],
        },
    )
    assert index.services_at("10.0.0.9") == (ServiceRef("a", "c"),)
    assert index.services_at("not-an-ip") == ()


def test_pod_in_two_services() -> None:
    index = indexing.ServiceIndex()
    index.apply_endpoints("ADDED", t.endpoints("default", "productpage", ["10.0.0.1"]))
    index.apply_endpoints("ADDED", t.endpoints("default", "frontend", ["10.0.0.1"]))
    assert index.services_at("10.0.0.1") == (FE, PP)


def test_endpoint_slices_and_reference_counts() -> None:
    index = indexing.ServiceIndex()
    index.apply_endpoint_slice(
        "ADDED", t.endpoint_slice("default", "pp-1", "productpage", ["10.0.0.1"])
    )
    index.apply_endpoints("ADDED", t.endpoints("default", "productpage", ["10.0.0.1"]))
    index.apply_endpoints("DELETED", t.endpoints("default", "productpage", []))
    assert index.services_at("10.0.0.1") == (PP,)  # the slice still says so
    index.apply_endpoint_slice("MODIFIED", t.endpoint_slice("default", "pp-1", "productpage", []))
    assert index.services_at("10.0.0.1") == ()


def test_slice_without_service_label_is_ignored() -> None:
    index = indexing.ServiceIndex()
    sl = t.endpoint_slice("default", "orphan", "x", ["10.0.0.1"])
    del sl["metadata"]["labels"]
    index.apply_endpoint_slice("ADDED", sl)
    assert index.services_at("10.0.0.1") == ()


def test_services_cluster_ips_and_existence() -> None:
    index = indexing.ServiceIndex()
    index.apply_service("ADDED", t.service("default", "details", "10.96.0.10"))
    headless = t.service("default", "db")
    headless["spec"]["clusterIP"] = "None"
    index.apply_service("ADDED", headless)
    assert index.has_service("default", "details")
    assert index.has_service("default", "db")
    assert not index.has_service("default", "nope")
    assert index.service_at_cluster_ip("10.96.0.10") == ServiceRef("default", "details")
    assert index.service_at_cluster_ip("None") is None
    index.apply_service("MODIFIED", t.service("default", "details", "10.96.0.20"))
    assert index.service_at_cluster_ip("10.96.0.10") is None
    assert index.service_at_cluster_ip("10.96.0.20") == ServiceRef("default", "details")
    index.apply_service("DELETED", t.service("default", "details", "10.96.0.20"))
    assert not index.has_service("default", "details")
    assert index.service_at_cluster_ip("10.96.0.20") is None


def test_dual_stack_cluster_ips() -> None:
    index = indexing.ServiceIndex()
    svc = t.service("default", "details", "10.96.0.10")
    svc["spec"]["clusterIPs"] = ["10.96.0.10", "fd00::10"]
    index.apply_service("ADDED", svc)
    assert index.service_at_cluster_ip("fd00::10") == ServiceRef("default", "details")


def test_services_selecting() -> None:
    index = t.sample_index()
    assert index.services_selecting("default", {"app": "reviews", "version": "v2"}) == (
        ServiceRef("default", "reviews"),
    )
    assert index.services_selecting("default", {"app": "productpage", "tier": "web"}) == (FE, PP)
    assert index.services_selecting("shop", {"app": "reviews"}) == ()
    no_selector = t.service("default", "external")
    no_selector["spec"]["selector"] = {}
    index.apply_service("ADDED", no_selector)
    assert ServiceRef("default", "external") not in index.services_selecting("default", {"a": "b"})


class FakeKubeApi:
    """Our own `KubeApi` seam: lists from a dict, watch streams from a queue per path."""

    def __init__(self, objects: dict[str, list[dict[str, Any]]], missing: set[str]) -> None:
        self.objects = objects
        self.missing = missing
        self.watch_events: dict[str, list[dict[str, Any]]] = {p: [] for p in objects}
        self.released = threading.Event()

    def list(self, path: str, **query: Any) -> dict[str, Any]:
        if path in self.missing:
            raise kube.KubeNotFound(404, "NotFound", path)
        return {"metadata": {"resourceVersion": "1"}, "items": self.objects.get(path, [])}

    def watch_lines(self, path: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        events, self.watch_events[path] = self.watch_events.get(path, []), []
        yield from events
        self.released.wait(0.05)


async def test_kube_indexer_lists_and_watches() -> None:
    api = FakeKubeApi(
        {
            indexing.ENDPOINTS_PATH: [t.endpoints("default", "productpage", ["10.0.0.1"])],
            indexing.SERVICES_PATH: [t.service("default", "details", "10.96.0.10")],
        },
        missing={indexing.ENDPOINT_SLICES_PATH},
    )
    index = indexing.ServiceIndex()
    indexer = indexing.KubeIndexer(
        api,  # type: ignore[arg-type]  # a stand-in: KubeApi's list and watch_lines
        index,
        loop=asyncio.get_running_loop(),
    )
    indexer.start()
    try:
        await asyncio.wait_for(indexer.wait_synced(), 5)
        assert indexer.synced()
        assert index.services_at("10.0.0.1") == (PP,)
        assert index.has_service("default", "details")
        modified = t.endpoints("default", "productpage", ["10.0.0.2"])
        modified["metadata"]["resourceVersion"] = "2"
        api.watch_events[indexing.ENDPOINTS_PATH] = [{"type": "MODIFIED", "object": modified}]
        await t.eventually(lambda: index.services_at("10.0.0.2") == (PP,), timeout=5)
        assert index.services_at("10.0.0.1") == ()
    finally:
        indexer.stop()
        api.released.set()
