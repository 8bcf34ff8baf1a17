"""The outcome of each fence on the ServiceFence itself (API server + real NATS + the real `run()`).

Covers: a Sidecar of the fence's name that lazyload does not manage is never overwritten, and the
conflict shows as `SidecarReady=False, reason SidecarConflict` in the fence's status (other
conditions kept) plus one Warning Event `SidecarConflict` (reportingComponent
`lazyload-sidecar-writer`, involvedObject the ServiceFence); a repeated conflict writes nothing
more; once the foreign Sidecar is gone and ours is written the condition flips to
`True/SidecarApplied` (lastTransitionTime moves) with a Normal `SidecarConflictResolved` Event;
further applies of a ready fence write no status at all; a status patch that meets a 409 is
re-read and retried; drift repair writes our Sidecar once the foreign one is gone (no new fence
event needed) and the condition flips to ready.

The API server is `kube_cluster` (the real kube-apiserver under `make test`), except for the 409
test, which injects its fault on `kube_emulator`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from lazyload_common import kube
from lazyload_testing.kube import KubeEmulator, service_fence
from lazyload_testing.kube_real import RealKube

from .conftest import make_fence
from .test_writer import UNMANAGED, _settings, running

FENCES = "/apis/microservice.slime.io/v1alpha1/namespaces/default/servicefences"
EVENTS = "/api/v1/namespaces/default/events"


async def _create_fence(api: kube.KubeApi) -> dict[str, Any]:
    fence = await asyncio.to_thread(api.create, FENCES, service_fence("productpage"))
    seeded = {"status": {"conditions": [{"type": "SpecValid", "status": "True"}]}}
    await asyncio.to_thread(api.merge_patch, f"{FENCES}/productpage/status", seeded)
    return fence


async def _conditions(api: kube.KubeApi) -> dict[str, dict[str, Any]]:
    fence = await asyncio.to_thread(api.get, f"{FENCES}/productpage")
    return {c["type"]: c for c in fence.get("status", {}).get("conditions", [])}


async def _events(api: kube.KubeApi) -> list[dict[str, Any]]:
    """The writer's Events about ServiceFences (a real server's controllers write their own)."""
    listed = await asyncio.to_thread(api.list, EVENTS)
    items = listed.get("items", [])
    ours = [e for e in items if e.get("reportingComponent") == "lazyload-sidecar-writer"]
    return sorted(ours, key=lambda e: int(e["metadata"]["resourceVersion"]))


def _status_writes(server: RealKube | KubeEmulator) -> int:
    return len(server.writes("/servicefences/productpage/status"))


async def test_conflict_is_reported_on_the_fence_and_clears(
    nats_url: str, kube_cluster: RealKube | KubeEmulator
) -> None:
    api = kube.KubeApi(kube_cluster.api_client())
    fence = await _create_fence(api)
    uid = fence["metadata"]["uid"]
    async with running(_settings(nats_url, kube_cluster), kube_cluster) as writer:
        await writer.create(UNMANAGED)
        kube_cluster.clear_requests()
        await writer.publish(make_fence(revision=1, uid=uid))
        assert (await writer.report()).action == "conflict"
        stored = await writer.get()
        assert stored is not None and stored["spec"] == UNMANAGED["spec"]  # never overwritten
        conditions = await _conditions(api)
        assert conditions["SpecValid"]["status"] == "True"  # fence-reconciler's is kept
        ready = conditions["SidecarReady"]
        assert (ready["status"], ready["reason"]) == ("False", "SidecarConflict")
        assert "not managed by lazyload" in ready["message"]
        assert ready["lastTransitionTime"] and ready["observedGeneration"] == 1
        [warning] = await _events(api)
        assert (warning["type"], warning["reason"]) == ("Warning", "SidecarConflict")
        assert warning["reportingComponent"] == "lazyload-sidecar-writer"
        assert warning["involvedObject"]["kind"] == "ServiceFence"
        assert warning["involvedObject"]["name"] == "productpage"
        assert warning["involvedObject"]["uid"] == uid
        assert _status_writes(kube_cluster) == 1

        await writer.publish(make_fence(revision=2, uid=uid))  # same conflict: nothing new
        assert (await writer.report()).action == "conflict"
        assert _status_writes(kube_cluster) == 1 and len(await _events(api)) == 1

        await writer.delete()
        await writer.publish(make_fence(revision=3, uid=uid))
        assert (await writer.report()).action == "applied"
        mine = await writer.get()
        assert mine is not None and mine["metadata"]["labels"]
        ready = (await _conditions(api))["SidecarReady"]
        assert (ready["status"], ready["reason"]) == ("True", "SidecarApplied")
        resolved = (await _events(api))[-1]
        assert (resolved["type"], resolved["reason"]) == ("Normal", "SidecarConflictResolved")
        assert _status_writes(kube_cluster) == 2

        for revision in (4, 5):  # a ready fence costs no status writes
            await writer.publish(
                make_fence(
                    revision=revision, uid=uid, hosts=[f"s{revision}.default.svc.cluster.local"]
                )
            )
            assert (await writer.report()).action == "applied"
        assert _status_writes(kube_cluster) == 2 and len(await _events(api)) == 2


async def test_status_patch_conflict_is_reread_and_retried(
    nats_url: str, kube_emulator: KubeEmulator
) -> None:
    api = kube.KubeApi(kube_emulator.api_client())
    fence = await _create_fence(api)
    async with running(_settings(nats_url, kube_emulator), kube_emulator) as writer:
        kube_emulator.inject_fault(
            "PATCH", path_regex="/servicefences/.*/status", status=409, count=1
        )
        await writer.publish(make_fence(revision=1, uid=fence["metadata"]["uid"]))
        assert (await writer.report()).action == "applied"
        ready = (await _conditions(api))["SidecarReady"]
        assert (ready["status"], ready["reason"]) == ("True", "SidecarApplied")
        statuses = [r.status for r in kube_emulator.writes("/status")]
        assert statuses[-2:] == [409, 200]
        assert await _events(api) == []  # no conflict, no Event


async def test_drift_repair_clears_the_conflict_without_a_new_event(
    nats_url: str, kube_cluster: RealKube | KubeEmulator
) -> None:
    api = kube.KubeApi(kube_cluster.api_client())
    fence = await _create_fence(api)
    settings = _settings(nats_url, kube_cluster, repair_interval=0.3)
    async with running(settings, kube_cluster) as writer:
        await writer.create(UNMANAGED)
        await writer.publish(make_fence(revision=1, uid=fence["metadata"]["uid"]))
        assert (await writer.report()).action == "conflict"
        assert (await _conditions(api))["SidecarReady"]["reason"] == "SidecarConflict"
        await writer.delete()
        repaired = await writer.report(lambda r: r.action == "applied")
        assert "drift repaired" in repaired.message
        ready = (await _conditions(api))["SidecarReady"]
        assert (ready["status"], ready["reason"]) == ("True", "SidecarApplied")
