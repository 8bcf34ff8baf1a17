"""Expansion and admission end to end, against the emulator and nats-server.

Covers: a VirtualService for a learned host adds its destinations (reason `expanded`), and the
fence follows when the VirtualService changes and when it is deleted; a fence's `labelSelector`
follows Services created and relabelled in any namespace; external edges are kept only for
ServiceEntry hosts (watched) and allow-listed hosts, dispatched hosts are never learned.
"""

from __future__ import annotations

import time

from lazyload_common import events, subjects
from lazyload_testing.kube import service_fence

REVIEWS = "reviews.default.svc.cluster.local"
V2 = "reviews-v2.default.svc.cluster.local"
V3 = "reviews-v3.default.svc.cluster.local"
VS = "/apis/networking.istio.io/v1/namespaces/default/virtualservices"
SE = "/apis/networking.istio.io/v1/namespaces/default/serviceentries"
FENCES = "/apis/microservice.slime.io/v1alpha1/namespaces/default/servicefences"


def _vs(dest: str) -> dict[str, object]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": dest}}]}]},
    }


async def test_virtual_service_expansion_follows_changes(reconciler, kit) -> None:
    kit.create_service("productpage")
    await reconciler.start()
    async with kit.events(subjects.fence("default", "productpage")) as seen:
        await kit.publish(kit.edge(REVIEWS))
        await seen.until(lambda e: REVIEWS in e.hosts)
        kit.api.create(VS, _vs("reviews-v2"))
        event = await seen.until(lambda e: V2 in e.hosts)
        assert event.added == [V2] and event.reasons[V2] == ["expanded", f"from:{REVIEWS}"]
        vs = kit.api.get(f"{VS}/reviews")
        vs["spec"] = _vs("reviews-v3")["spec"]
        kit.api.replace(f"{VS}/reviews", vs)
        event = await seen.until(lambda e: V3 in e.hosts)
        assert event.added == [V3] and event.removed == [V2]
        kit.api.delete(f"{VS}/reviews")
        event = await seen.until(lambda e: V3 not in e.hosts and e.revision > 3)
        assert event.hosts == [REVIEWS] and event.removed == [V3]


async def test_label_selector_follows_services(reconciler, kit) -> None:
    for ns in ("data", "other"):
        kit.api.create("/api/v1/namespaces", {"metadata": {"name": ns}})
    kit.create_service("db", ns="data", labels={"tier": "db"})
    await reconciler.start()
    fence = service_fence("productpage", labelSelector=[{"selector": {"tier": "db"}}])
    async with kit.events(subjects.fence("default", "productpage")) as seen:
        kit.api.create(FENCES, fence)
        event = await seen.until(lambda e: "db.data.svc.cluster.local" in e.hosts)
        assert event.reasons["db.data.svc.cluster.local"] == ["selector"]
        kit.create_service("cache", ns="other", labels={"tier": "db"})
        await seen.until(lambda e: "cache.other.svc.cluster.local" in e.hosts)
        service = kit.api.get("/api/v1/namespaces/data/services/db")
        service["metadata"]["labels"] = {"tier": "web"}
        kit.api.replace("/api/v1/namespaces/data/services/db", service)
        event = await seen.until(lambda e: "db.data.svc.cluster.local" not in e.hosts)
        assert event.hosts == ["cache.other.svc.cluster.local"]


def _external(host: str, *, registered: bool = False) -> events.DependencyObserved:
    now = time.time()
    return events.DependencyObserved(
        source_namespace="default",
        source_name="productpage",
        destination_host=host,
        destination_port=443,
        destination_namespace="default" if registered else None,
        external=True,
        first_seen=now,
        observed_at=now,
    )


async def test_external_edges_and_dispatches(reconciler, kit) -> None:
    kit.create_service("productpage")
    kit.api.create(
        SE,
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "ServiceEntry",
            "metadata": {"name": "wiki", "namespace": "default"},
            "spec": {"hosts": ["*.wiki.org"], "resolution": "DNS"},
        },
    )
    await reconciler.start(
        external_allow=["*.allowed.io"],
        dispatches=[{"name": "ext", "domains": ["*.example.com"], "cluster": "_PASSTHROUGH"}],
    )
    async with kit.events(subjects.fence("default", "productpage")) as seen:
        await kit.publish(
            _external("www.unknown.com"),
            _external("www.example.com", registered=True),
            kit.edge("api.example.com"),
            _external("en.wiki.org"),
            _external("x.allowed.io"),
            _external("api.stripe.com", registered=True),
            kit.edge(REVIEWS),
        )
        await seen.until(lambda e: len(e.hosts) == 4)
        published = await seen.drain()
    assert published[-1].hosts == sorted(["en.wiki.org", "x.allowed.io", "api.stripe.com", REVIEWS])
