"""With the default settings an edge to a Service FQDN that names no Service (a forged event on
NATS: ingest itself marks such a host external) is dropped and counted, never learned (#16)."""

from __future__ import annotations

from prometheus_client import REGISTRY

REVIEWS = "reviews.default.svc.cluster.local"
GHOST = "ghost.default.svc.cluster.local"


async def test_an_edge_to_no_service_is_not_learned(reconciler, kit) -> None:
    kit.create_service("productpage")
    kit.create_service("reviews")
    dropped = REGISTRY.get_sample_value(
        "lazyload_fence_edges_total", {"outcome": "unknown-service"}
    )
    await reconciler.start(learn_unknown_services=False)
    async with kit.events() as seen:
        await kit.publish(kit.edge(GHOST), kit.edge(REVIEWS))
        await seen.until(lambda e: REVIEWS in e.hosts)
        await seen.drain()
    assert all(GHOST not in e.hosts for e in seen.seen)
    assert list(kit.fence("productpage")["status"]["learned"]) == [REVIEWS]
    after = REGISTRY.get_sample_value("lazyload_fence_edges_total", {"outcome": "unknown-service"})
    assert after == (dropped or 0) + 1
