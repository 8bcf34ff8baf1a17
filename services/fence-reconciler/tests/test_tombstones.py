"""Deleted manual fences stay deleted, across restarts (the emulator and nats-server).

Covers: deleting a manual fence writes the tombstone annotation `lazyload.io/fence-deleted` on its
Service; after a restart (memory gone) traffic and an explicit `slime.io/serviceFenced: "true"`
present at deletion time do not recreate it; labelling the Service "true" afterwards (a change)
recreates it and clears the tombstone; a user creating the fence again clears it too.
"""

from __future__ import annotations

import asyncio

DETAILS = "details.default.svc.cluster.local"
PATH = "/apis/microservice.slime.io/v1alpha1/namespaces/default/servicefences"
SERVICE = "/api/v1/namespaces/default/services/manual"
MARK = "lazyload.io/fence-deleted"
BODY = {
    "apiVersion": "microservice.slime.io/v1alpha1",
    "kind": "ServiceFence",
    "metadata": {"name": "manual", "namespace": "default"},
    "spec": {"enable": True, "workloadSelector": {"fromService": True}},
}


def _mark(kit) -> str | None:  # type: ignore[no-untyped-def]
    return (kit.api.get(SERVICE)["metadata"].get("annotations") or {}).get(MARK)


def _label(kit, labels: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    service = kit.api.get(SERVICE)
    service["metadata"]["labels"] = labels
    kit.api.replace(SERVICE, service)


async def _create_and_delete(reconciler, kit, seen, labels=None) -> None:  # type: ignore[no-untyped-def]
    await reconciler.start()
    kit.api.create(PATH, BODY)
    await seen.until(lambda e: e.name == "manual" and e.revision == 1)
    if labels is not None:
        _label(kit, labels)
        await asyncio.sleep(0.5)  # the Services watch sees the label before the fence deletion
    kit.api.delete(f"{PATH}/manual")
    await seen.until(lambda e: e.name == "manual" and e.deleted)
    await kit.eventually(lambda: _mark(kit))


async def test_tombstone_survives_restart_until_relabelled(reconciler, kit) -> None:  # type: ignore[no-untyped-def]
    kit.create_service("manual")
    kit.create_service("productpage")
    async with kit.events() as seen:
        await _create_and_delete(reconciler, kit, seen, {"slime.io/serviceFenced": "true"})
        assert _mark(kit).endswith(";serviceFenced=true")
        await reconciler.stop()
        await reconciler.start()
        await kit.publish(kit.edge(DETAILS, name="manual"), kit.edge(DETAILS))
        await seen.until(lambda e: e.name == "productpage")
        assert kit.fence("manual") is None
        _label(kit, {})
        await kit.eventually(lambda: _mark(kit).endswith(";serviceFenced="))
        assert kit.fence("manual") is None
        _label(kit, {"slime.io/serviceFenced": "true"})
        await kit.eventually(lambda: kit.fence("manual"))
        await kit.eventually(lambda: _mark(kit) is None)


async def test_user_recreating_the_fence_clears_the_tombstone(reconciler, kit) -> None:  # type: ignore[no-untyped-def]
    kit.create_service("manual")
    async with kit.events() as seen:
        await _create_and_delete(reconciler, kit, seen)
        kit.api.create(PATH, BODY)
        await seen.until(lambda e: e.name == "manual" and not e.deleted and e.revision > 2)
        await kit.eventually(lambda: _mark(kit) is None)
