"""Workload fences for pods without a Service (Slime's fenceLabelKeyAlias; emulator + nats-server).

Covers: with `workload_label_key="app"`, a `source_kind="workload"` caller whose pods carry
`app=<name>` gets the fence `app-<name>.workload.identity` selecting those pods (auto-created,
published), and the fence is deleted when its last pod goes; without a labelled pod the edge
waits; the setting parses `key[:alias]` and refuses a bad key; a deleted manual workload fence's
tombstone is persisted, holds across a restart and goes with the workload's last pod.
"""

from __future__ import annotations

import contextlib
import time

import pytest
from lazyload_common import errors, events, kube, subjects
from lazyload_fence_reconciler.settings import FenceSettings, ReconcilerSettings

DETAILS = "details.default.svc.cluster.local"
PODS = "/api/v1/namespaces/default/pods"
NAME = "app-batch.workload.identity"
FENCES = "/apis/microservice.slime.io/v1alpha1/namespaces/default/servicefences"
TOMBSTONES = "/api/v1/namespaces/mesh-operator/configmaps/lazyload-fence-tombstones"
ENTRY = f"default_{NAME}"


def _workload_edge(name: str) -> events.DependencyObserved:
    now = time.time()
    return events.DependencyObserved(
        source_namespace="default",
        source_name=name,
        source_kind="workload",
        destination_host=DETAILS,
        destination_port=9080,
        first_seen=now,
        observed_at=now,
    )


def _pod(name: str, app: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": app}},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]},
    }


async def test_workload_fence_lives_with_its_pods(reconciler, kit) -> None:
    kit.api.create(PODS, _pod("batch-1", "batch"))
    await reconciler.start(workload_label_key="app")
    async with kit.events(subjects.fence("default", NAME)) as seen:
        await kit.publish(_workload_edge("batch"))
        event = await seen.until(lambda e: DETAILS in e.hosts)
        assert event.workload_selector == {"app": "batch"}
        fence = kit.fence(NAME)
        assert fence["spec"]["workloadSelector"] == {"labels": {"app": "batch"}}
        assert fence["metadata"]["labels"]["app.kubernetes.io/created-by"] == "fence-controller"
        kit.api.delete(f"{PODS}/batch-1")
        await seen.until(lambda e: e.deleted)
    assert kit.fence(NAME) is None


def test_workload_label_key_setting() -> None:
    identity = FenceSettings(workload_label_key="team/app:wl").workload_identity()
    assert identity is not None and identity.key == "team/app"
    assert identity.fence_name("x") == "wl-x.workload.identity"
    assert identity.value_of("wl-x.workload.identity") == "x"
    assert identity.value_of("productpage") is None
    assert FenceSettings().workload_identity() is None
    with pytest.raises(errors.ConfigError):
        ReconcilerSettings(fence=FenceSettings(workload_label_key="bad key")).check()


async def test_a_deleted_manual_workload_fence_stays_deleted_while_its_workload_lives(
    reconciler, kit
) -> None:
    """The tombstone of a workload fence (no Service to die with) is persisted and lives with
    the workload's pods: after a restart the workload's traffic does not recreate the fence;
    once no pod carries the label the tombstone is removed, and a new workload of that name is
    fenced by its first call."""
    with contextlib.suppress(kube.KubeConflict):
        kit.api.create("/api/v1/namespaces", {"metadata": {"name": "mesh-operator"}})
    kit.api.create(PODS, _pod("batch-1", "batch"))
    kit.api.create(PODS, _pod("other-1", "other"))
    await reconciler.start(workload_label_key="app")
    async with kit.events() as seen:
        manual = {
            "apiVersion": "microservice.slime.io/v1alpha1",
            "kind": "ServiceFence",
            "metadata": {"name": NAME, "namespace": "default"},
            "spec": {"enable": True, "workloadSelector": {"labels": {"app": "batch"}}},
        }
        kit.api.create(FENCES, manual)
        await seen.until(lambda e: e.name == NAME and e.revision == 1)
        kit.api.delete(f"{FENCES}/{NAME}")
        await seen.until(lambda e: e.name == NAME and e.deleted)
        await kit.eventually(lambda: ENTRY in _tombstones(kit))
        assert _tombstones(kit)[ENTRY].endswith(";serviceFenced=;uid=")
        await reconciler.stop()
        await reconciler.start(workload_label_key="app")
        await kit.publish(_workload_edge("batch"), _workload_edge("other"))
        await seen.until(lambda e: e.name == "app-other.workload.identity" and DETAILS in e.hosts)
        assert kit.fence(NAME) is None
        kit.api.delete(f"{PODS}/batch-1")
        await kit.eventually(lambda: ENTRY not in _tombstones(kit))
        kit.api.create(PODS, _pod("batch-2", "batch"))
        await kit.publish(_workload_edge("batch"))
        await seen.until(lambda e: e.name == NAME and DETAILS in e.hosts)


def _tombstones(kit) -> dict[str, str]:
    try:
        return dict(kit.api.get(TOMBSTONES).get("data") or {})
    except kube.KubeNotFound:
        return {}
