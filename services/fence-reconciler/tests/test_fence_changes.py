"""Fence edits seen through the watch, against the emulator and nats-server.

Covers: a user adding `spec.host` entries (a host and `ns/*`) gets a new revision with reason
`spec`; disabling a fence is a new revision with `enabled=False` and no host change; a change of
the Service's selector is a new revision with the new workload selector; a manually created fence
is published and learns; a deleted fence gives a `deleted` event; a deleted manual fence is not
recreated by traffic; our own status writes do not cause more events.
"""

from __future__ import annotations

from lazyload_common import subjects
from lazyload_testing.kube import service_fence

DETAILS = "details.default.svc.cluster.local"
PATH = "/apis/microservice.slime.io/v1alpha1/namespaces/default/servicefences"


async def _learned_fence(reconciler, kit, seen) -> dict:
    kit.create_service("productpage")
    await reconciler.start()
    await kit.publish(kit.edge(DETAILS))
    await seen.until(lambda e: DETAILS in e.hosts)
    return kit.fence("productpage")


async def test_spec_hosts_are_published(reconciler, kit) -> None:
    async with kit.events(subjects.fence("default", "productpage")) as seen:
        fence = await _learned_fence(reconciler, kit, seen)
        fence["spec"]["host"] = {"www.example.com": {"stable": {}}, "test/*": {}}
        kit.api.replace(f"{PATH}/productpage", fence)
        event = await seen.until(lambda e: "test/*" in e.hosts)
        assert event.revision == 2
        assert event.hosts == [DETAILS, "test/*", "www.example.com"]
        assert sorted(event.added) == ["test/*", "www.example.com"] and event.removed == []
        assert event.reasons["test/*"] == ["spec"] and event.reasons[DETAILS] == ["learned"]
        assert len(await seen.drain()) == 2


async def test_disable_is_a_new_revision(reconciler, kit) -> None:
    async with kit.events(subjects.fence("default", "productpage")) as seen:
        fence = await _learned_fence(reconciler, kit, seen)
        fence["spec"]["enable"] = False
        kit.api.replace(f"{PATH}/productpage", fence)
        event = await seen.until(lambda e: not e.enabled)
        assert event.revision == 2 and event.hosts == [DETAILS]
        assert event.added == [] and event.removed == []


async def test_service_selector_change_is_published(reconciler, kit) -> None:
    async with kit.events(subjects.fence("default", "productpage")) as seen:
        await _learned_fence(reconciler, kit, seen)
        service = kit.api.get("/api/v1/namespaces/default/services/productpage")
        service["spec"]["selector"] = {"app": "productpage", "version": "v2"}
        kit.api.replace("/api/v1/namespaces/default/services/productpage", service)
        event = await seen.until(lambda e: e.revision == 2)
        assert event.workload_selector == {"app": "productpage", "version": "v2"}


async def test_manual_fence_is_published_and_learns(reconciler, kit) -> None:
    await reconciler.start()
    body = service_fence("worker", workloadSelector={"labels": {"role": "worker"}})
    async with kit.events(subjects.fence("default", "worker")) as seen:
        kit.api.create(PATH, body)
        first = await seen.until(lambda e: e.revision == 1)
        assert first.hosts == [] and first.workload_selector == {"role": "worker"}
        await kit.publish(kit.edge(DETAILS, name="worker"))
        second = await seen.until(lambda e: DETAILS in e.hosts)
        assert second.revision == 2 and second.added == [DETAILS]
    assert "app.kubernetes.io/created-by" not in (
        kit.fence("worker")["metadata"].get("labels") or {}
    )


async def test_deleted_fence_is_announced(reconciler, kit) -> None:
    async with kit.events(subjects.fence("default", "productpage")) as seen:
        await _learned_fence(reconciler, kit, seen)
        kit.api.delete(f"{PATH}/productpage")
        event = await seen.until(lambda e: e.deleted)
        assert event.revision == 2 and event.hosts == [] and event.removed == [DETAILS]
        assert not event.enabled


async def test_recreated_fence_continues_revisions(reconciler, kit) -> None:
    async with kit.events(subjects.fence("default", "productpage")) as seen:
        await _learned_fence(reconciler, kit, seen)
        kit.api.delete(f"{PATH}/productpage")
        await seen.until(lambda e: e.deleted)
        await kit.publish(kit.edge("reviews.default.svc.cluster.local"))
        event = await seen.until(lambda e: not e.deleted and e.revision > 2)
        assert event.revision == 3 and event.hosts == ["reviews.default.svc.cluster.local"]


async def test_deleted_manual_fence_is_not_recreated(reconciler, kit) -> None:
    kit.create_service("manual")
    await reconciler.start()
    body = service_fence("manual", workloadSelector={"fromService": True})
    async with kit.events() as seen:
        kit.api.create(PATH, body)
        await seen.until(lambda e: e.name == "manual" and e.revision == 1)
        kit.api.delete(f"{PATH}/manual")
        await seen.until(lambda e: e.name == "manual" and e.deleted)
        kit.create_service("productpage")
        await kit.publish(kit.edge(DETAILS, name="manual"), kit.edge(DETAILS))
        await seen.until(lambda e: e.name == "productpage")
    assert kit.fence("manual") is None
