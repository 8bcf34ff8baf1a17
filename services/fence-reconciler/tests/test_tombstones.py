"""Deleted manual fences stay deleted, across restarts (the API server and nats-server).

Covers: deleting a manual fence writes its tombstone into the ConfigMap
`mesh-operator/lazyload-fence-tombstones` (key `<ns>_<name>`, with the Service's uid), never onto
the Service; after a restart (memory gone) traffic and an explicit `slime.io/serviceFenced: "true"`
present at deletion time do not recreate it; labelling the Service "true" afterwards (a change)
recreates it and clears the tombstone; a user creating the fence again clears it too; deleting
the Service voids and removes its tombstone; one deleted before its Service is seen is persisted
when it shows; the old `lazyload.io/fence-deleted` annotations are
moved into the ConfigMap when it does not exist yet; writers of different entries at once never
lose one another's (merge patch); a write that fails (no such namespace here) is counted and
reported, never raised.
"""

from __future__ import annotations

import asyncio
import contextlib

from lazyload_common import kube
from lazyload_fence_reconciler import applying
from prometheus_client import REGISTRY

DETAILS = "details.default.svc.cluster.local"
PATH = "/apis/microservice.slime.io/v1alpha1/namespaces/default/servicefences"
SERVICE = "/api/v1/namespaces/default/services/manual"
TOMBSTONES = "/api/v1/namespaces/mesh-operator/configmaps/lazyload-fence-tombstones"
OLD_MARK = "lazyload.io/fence-deleted"
BODY = {
    "apiVersion": "microservice.slime.io/v1alpha1",
    "kind": "ServiceFence",
    "metadata": {"name": "manual", "namespace": "default"},
    "spec": {"enable": True, "workloadSelector": {"fromService": True}},
}


def _entries(kit) -> dict[str, str]:
    try:
        return dict(kit.api.get(TOMBSTONES).get("data") or {})
    except kube.KubeNotFound:
        return {}


def _mark(kit) -> str | None:
    return _entries(kit).get("default_manual")


def _label(kit, labels: dict[str, str]) -> None:
    service = kit.api.get(SERVICE)
    service["metadata"]["labels"] = labels
    kit.api.replace(SERVICE, service)


def _namespace(kit) -> None:
    with contextlib.suppress(kube.KubeConflict):
        kit.api.create("/api/v1/namespaces", {"metadata": {"name": "mesh-operator"}})


async def _create_and_delete(reconciler, kit, seen, labels=None) -> None:
    _namespace(kit)
    await reconciler.start()
    kit.api.create(PATH, BODY)
    await seen.until(lambda e: e.name == "manual" and e.revision == 1)
    if labels is not None:
        _label(kit, labels)
        await asyncio.sleep(0.5)  # the Services watch sees the label before the fence deletion
    kit.api.delete(f"{PATH}/manual")
    await seen.until(lambda e: e.name == "manual" and e.deleted)
    await kit.eventually(lambda: _mark(kit))


async def test_tombstone_survives_restart_until_relabelled(reconciler, kit) -> None:
    service = kit.create_service("manual")
    kit.create_service("productpage")
    async with kit.events() as seen:
        await _create_and_delete(reconciler, kit, seen, {"slime.io/serviceFenced": "true"})
        assert (_mark(kit) or "").endswith(f";serviceFenced=true;uid={service['metadata']['uid']}")
        assert OLD_MARK not in (kit.api.get(SERVICE)["metadata"].get("annotations") or {})
        await reconciler.stop()
        await reconciler.start()
        await kit.publish(kit.edge(DETAILS, name="manual"), kit.edge(DETAILS))
        await seen.until(lambda e: e.name == "productpage")
        assert kit.fence("manual") is None
        _label(kit, {})
        await kit.eventually(lambda: ";serviceFenced=;" in (_mark(kit) or ""))
        assert kit.fence("manual") is None
        _label(kit, {"slime.io/serviceFenced": "true"})
        await kit.eventually(lambda: kit.fence("manual"))
        await kit.eventually(lambda: _mark(kit) is None)


async def test_user_recreating_the_fence_clears_the_tombstone(reconciler, kit) -> None:
    kit.create_service("manual")
    async with kit.events() as seen:
        await _create_and_delete(reconciler, kit, seen)
        kit.api.create(PATH, BODY)
        await seen.until(lambda e: e.name == "manual" and not e.deleted and e.revision > 2)
        await kit.eventually(lambda: _mark(kit) is None)


async def test_tombstone_dies_with_its_service(reconciler, kit) -> None:
    kit.create_service("manual")
    async with kit.events() as seen:
        await _create_and_delete(reconciler, kit, seen)
        kit.api.delete(SERVICE)
        await kit.eventually(lambda: _mark(kit) is None)
        # a new Service of that name starts afresh: its first call fences it again
        kit.create_service("manual")
        await asyncio.sleep(0.5)  # the Services watch sees it before the edge
        await kit.publish(kit.edge(DETAILS, name="manual"))
        await kit.eventually(lambda: kit.fence("manual"))


async def test_tombstone_waits_for_its_service(reconciler, kit) -> None:
    _namespace(kit)
    async with kit.events() as seen:
        await reconciler.start()
        kit.api.create(PATH, BODY)
        await seen.until(lambda e: e.name == "manual" and e.revision == 1)
        kit.api.delete(f"{PATH}/manual")
        await seen.until(lambda e: e.name == "manual" and e.deleted)
        # no Service yet (or the watch has not brought it): persisted once it shows
        uid = kit.create_service("manual")["metadata"]["uid"]
        await kit.eventually(lambda: (_mark(kit) or "").endswith(f";uid={uid}"))


async def test_annotations_of_older_versions_move_to_the_configmap(reconciler, kit) -> None:
    _namespace(kit)
    # labelled as the annotation says it was at deletion: the tombstone has no label to follow
    service = kit.create_service("manual", labels={"slime.io/serviceFenced": "true"})
    service["metadata"]["annotations"] = {OLD_MARK: "2026-01-02T03:04:05Z;serviceFenced=true"}
    service = kit.api.replace(SERVICE, service)
    kit.create_service("productpage")
    async with kit.events() as seen:
        await reconciler.start()
        uid = service["metadata"]["uid"]
        assert _mark(kit) == f"2026-01-02T03:04:05Z;serviceFenced=true;uid={uid}"
        labels = kit.api.get(TOMBSTONES)["metadata"]["labels"]
        assert labels["lazyload.io/store"] == "fence-tombstones"
        await kit.publish(kit.edge(DETAILS, name="manual"), kit.edge(DETAILS))
        await seen.until(lambda e: e.name == "productpage")
        assert kit.fence("manual") is None
        # only while the ConfigMap does not exist: a cleared tombstone is not brought back
        kit.api.create(PATH, BODY)
        await kit.eventually(lambda: _mark(kit) is None)
        await reconciler.stop()
        await reconciler.start()
        assert _mark(kit) is None and OLD_MARK in kit.api.get(SERVICE)["metadata"]["annotations"]


async def test_writers_of_different_entries_keep_each_others(kit, kube_server) -> None:
    _namespace(kit)
    a = applying.Applier(kube.AsyncKube(kube_server.api_client()))
    b = applying.Applier(kube.AsyncKube(kube_server.api_client()))
    writes = [
        (a if i % 2 else b).mark_tombstone(f"ns{i}_svc", f"2026-01-01T00:00:00Z;uid={i}")
        for i in range(24)
    ]
    assert all(await asyncio.gather(*writes))  # the first ones race to create the ConfigMap
    assert set(_entries(kit)) == {f"ns{i}_svc" for i in range(24)}
    assert all(await asyncio.gather(*(a.mark_tombstone(f"ns{i}_svc", None) for i in range(12))))
    assert set(_entries(kit)) == {f"ns{i}_svc" for i in range(12, 24)}
    failures = "lazyload_fence_tombstone_write_failures_total"
    before = REGISTRY.get_sample_value(failures) or 0.0
    nowhere = applying.Applier(
        kube.AsyncKube(kube_server.api_client()), tombstone_map=("gone", "x")
    )
    assert not await nowhere.mark_tombstone("ns_svc", "2026-01-01T00:00:00Z;uid=1")
    assert REGISTRY.get_sample_value(failures) == before + 1
