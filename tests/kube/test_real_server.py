"""What must hold on a real kube-apiserver (etcd + kube-apiserver + kube-controller-manager).

- A ServiceFence status as the reconciler computes it is accepted and kept whole (no pruning) by
  lazyload's CRD; a Slime-era CRD (typed from Slime's Go types, `status.domains.*.status` an int)
  refuses it, and the migration `kubectl replace -f deploy/crds/servicefence.yaml` fixes that while
  the fences Slime wrote stay readable.
- After etcd compaction a watch gets 410 Gone and the Reflector relists and carries on.
- Sidecars owned by a ServiceFence go when the fence is deleted: kube-controller-manager's garbage
  collector does it, as in a cluster.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from lazyload_common import kube
from lazyload_fence_reconciler import desiring, fences
from lazyload_testing.kube import repo_root, service_fence
from lazyload_testing.kube_real import RealKube, start_real_kube

pytestmark = pytest.mark.real

ROOT = repo_root()
SLIME_CRD = Path(__file__).parent / "data" / "slime-era-servicefence-crd.yaml"
LAZYLOAD_CRD = ROOT / "deploy" / "crds" / "servicefence.yaml"
FENCES = "/apis/microservice.slime.io/v1alpha1/namespaces/default/servicefences"
SIDECARS = "/apis/networking.istio.io/v1/namespaces/default/sidecars"
DETAILS = "details.default.svc.cluster.local"


def _fence(name: str) -> dict[str, Any]:
    return service_fence(
        name,
        host={"ratings.default.svc.cluster.local": {"stable": {}}},
        workloadSelector={"fromService": True},
    )


def _lazyload_status(obj: dict[str, Any]) -> dict[str, Any]:
    """The status the reconciler writes for `obj` after it learned `details` from traffic."""
    now = time.time()
    desired = desiring.desire(
        fences.Fence.from_raw(obj),
        [desiring.Edge(host=DETAILS, port=9080, first_seen=now - 5, observed_at=now)],
        service_selector={"app": obj["metadata"]["name"]},
        now=now,
    )
    assert desired.write_needed
    return desired.status


def _put_status(api: kube.KubeApi, obj: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    path = f"{FENCES}/{obj['metadata']['name']}/status"
    return api.replace(path, {**obj, "status": status})


def _kubectl(real: RealKube, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "kubectl"), "--kubeconfig", str(real.kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_lazyload_status_is_accepted_and_kept_whole(real_kube: RealKube) -> None:
    api = kube.KubeApi(real_kube.api_client())
    created = api.create(FENCES, _fence("productpage"))
    status = _lazyload_status(created)
    written = _put_status(api, created, status)
    assert written["status"] == status
    assert api.get(f"{FENCES}/productpage")["status"] == status
    assert set(status) >= {"domains", "learned", "revision", "hostCount", "conditions"}
    assert status["domains"][DETAILS]["status"] == "ACTIVE"


def test_slime_era_crd_refuses_lazyload_status_until_replaced(real_kube: RealKube) -> None:
    api = kube.KubeApi(real_kube.api_client())
    real_kube.plane.install_crds([SLIME_CRD])
    # A fence as Slime left it: its controller writes the domain status as an int.
    slime = api.create(FENCES, _fence("reviews"))
    slime_status = {
        "domains": {DETAILS: {"hosts": [DETAILS], "status": 2}},
        "metricStatus": {f'{{destination_service="{DETAILS}"}}': "3"},
    }
    slime = _put_status(api, slime, slime_status)
    assert slime["status"] == slime_status

    # What lazyload writes is refused whole: the enum is a name, the CRD wants an int.
    ours = api.create(FENCES, _fence("productpage"))
    with pytest.raises(kube.KubeUnprocessable) as refused:
        _put_status(api, ours, _lazyload_status(ours))
    assert refused.value.status == 422
    assert "status.domains" in refused.value.message
    # Without a domain status, the write goes through but lazyload's own fields are pruned.
    bare = {**_lazyload_status(ours), "domains": {DETAILS: {"hosts": [DETAILS]}}}
    pruned = _put_status(api, api.get(f"{FENCES}/productpage"), bare)["status"]
    assert "revision" not in pruned and "learned" not in pruned and "hostCount" not in pruned

    # The documented migration: replace the CRD with lazyload's (a superset of Slime's shape).
    replaced = _kubectl(real_kube, "replace", "-f", str(LAZYLOAD_CRD))
    assert replaced.returncode == 0, replaced.stderr
    waited = _kubectl(
        real_kube,
        "wait",
        "--for=condition=Established",
        "crd/servicefences.microservice.slime.io",
        "--timeout=30s",
    )
    assert waited.returncode == 0, waited.stderr
    assert api.get(f"{FENCES}/reviews")["status"] == slime_status  # Slime's fence unchanged
    current = api.get(f"{FENCES}/productpage")
    status = _lazyload_status(current)
    assert _put_status(api, current, status)["status"] == status
    assert api.get(f"{FENCES}/productpage")["status"] == status


def _etcd(real: RealKube, call: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{real.etcd_url}/v3/{call}", data=json.dumps(body).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(json.loads(response.read()))


async def test_watch_expired_by_compaction_relists_and_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lazyload_common.kube")
    # A private server without the watch cache: a watch from a compacted revision reaches etcd.
    with start_real_kube(tmp_path / "kube", extra_apiserver_args=["--watch-cache=false"]) as real:
        api = kube.KubeApi(real.api_client())
        path = "/api/v1/namespaces/default/configmaps"
        api.create(path, {"metadata": {"name": "first"}, "data": {"n": "0"}})
        seen: list[tuple[str, str]] = []
        reflector = kube.Reflector(
            api,
            path,
            on_change=lambda kind, obj: seen.append(
                (kind, obj.get("metadata", {}).get("name", ""))
            ),
            loop=asyncio.get_running_loop(),
            watch_timeout=2,
        )
        reflector.start()
        try:
            await asyncio.wait_for(reflector.synced.wait(), 20)
            assert seen.count(("SYNCED", "")) == 1
            # Move etcd's revision on elsewhere, then compact everything before it.
            other = "/api/v1/namespaces/kube-public/configmaps"
            for i in range(5):
                api.create(other, {"metadata": {"name": f"churn-{i}"}})
            key = base64.b64encode(b"/registry").decode()
            revision = int(_etcd(real, "kv/range", {"key": key})["header"]["revision"])
            _etcd(real, "kv/compaction", {"revision": str(revision), "physical": True})
            # The reflector's next watch (after its 2 s timeout) starts below the compaction.
            async with asyncio.timeout(20):
                while seen.count(("SYNCED", "")) < 2:
                    await asyncio.sleep(0.05)
            assert any("expired (410)" in r.getMessage() for r in caplog.records)
            api.create(path, {"metadata": {"name": "after"}})
            async with asyncio.timeout(10):
                while ("default", "after") not in reflector.store:
                    await asyncio.sleep(0.05)
            assert ("default", "first") in reflector.store
        finally:
            reflector.stop()


def test_owned_sidecar_goes_with_its_fence(real_kube: RealKube) -> None:
    assert real_kube.plane.binaries.controller_manager is not None, "kube-controller-manager"
    api = kube.KubeApi(real_kube.api_client())
    fence = api.create(FENCES, _fence("productpage"))
    owner = {
        "apiVersion": "microservice.slime.io/v1alpha1",
        "kind": "ServiceFence",
        "name": "productpage",
        "uid": fence["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    api.create(
        SIDECARS,
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "Sidecar",
            "metadata": {"name": "productpage", "ownerReferences": [owner]},
            "spec": {
                "workloadSelector": {"labels": {"app": "productpage"}},
                "egress": [{"hosts": ["istio-system/*", f"*/{DETAILS}"]}],
            },
        },
    )
    api.delete(f"{FENCES}/productpage")
    deadline = time.monotonic() + 30
    while True:
        try:
            api.get(f"{SIDECARS}/productpage")
        except kube.KubeNotFound:
            break
        assert time.monotonic() < deadline, "the garbage collector left the owned Sidecar"
        time.sleep(0.2)
