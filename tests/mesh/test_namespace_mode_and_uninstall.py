"""lazyload in namespace mode on the real Istio rig (issue 14, scenario 6: one global-sidecar per
fenced namespace, `globalSidecar.mode=namespace`), and removed from the mesh as docs/install.md
says (scenario 8): calls between workloads keep working."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator

import pytest
from lazyload_cli.stack import bin_path
from lazyload_testing.mesh import IstioMesh, MeshWorkload
from lazyload_testing.mesh_lazyload import SERVICEFENCES, SIDECARS, LazyloadInMesh

pytestmark = [pytest.mark.real, pytest.mark.mesh]

NS = "lazy-nsmode"


@pytest.fixture(scope="module")
def lazyload_per_namespace(istio_mesh_server: IstioMesh) -> Iterator[LazyloadInMesh]:
    state_dir = istio_mesh_server.directory / "lazyload-nsmode"
    if state_dir.exists():
        shutil.rmtree(state_dir)
    with LazyloadInMesh(istio_mesh_server, state_dir, namespace_mode=(NS,)) as stack:
        yield stack


def _egress(lazyload: LazyloadInMesh, caller: MeshWorkload) -> list[str]:
    sidecar = lazyload.sidecar(caller.namespace, caller.name) or {"spec": {}}
    return [h for e in sidecar["spec"].get("egress") or [] for h in e.get("hosts") or []]


def _learn(lazyload: LazyloadInMesh, caller: MeshWorkload, callee: MeshWorkload) -> None:
    """A first call through the namespace's global-sidecar, learned, then a direct call."""
    gs = lazyload.global_sidecars[caller.namespace]
    callee_cluster = f"outbound|80||{callee.host}"

    def scoped() -> bool:
        clusters = set(caller.clusters())
        return gs.cluster in clusters and callee_cluster not in clusters

    lazyload.wait_for(scoped, f"{caller.name}'s sidecar is not scoped to its namespace's gs")
    caller.wait_synced()
    status, body = caller.http_get(f"http://{callee.host}/first")
    assert status == 200, f"{body}\n{lazyload.logs()}"
    assert json.loads(body)["headers"]["slime-orig-dest"] == f"{callee.service_ip}:80"
    assert caller.host_counters(gs.cluster)[f"{gs.ip}:80"]["rq_success"] == 1
    lazyload.wait_for(
        lambda: f"*/{callee.host}" in _egress(lazyload, caller),
        f"the first call taught nothing\n{lazyload.logs()}",
    )
    lazyload.wait_for(lambda: callee_cluster in caller.clusters(), "istiod pushed no callee")
    caller.wait_synced()
    status, body = caller.http_get(f"http://{callee.host}/second")
    assert status == 200 and "slime-orig-dest" not in json.loads(body)["headers"], body


def _delete_all(mesh: IstioMesh, collection: str, label_selector: str = "") -> None:
    """`kubectl delete <kind> [-l selector]`: list, then delete each."""
    query = {"labelSelector": label_selector} if label_selector else {}
    items = mesh.api.list(collection, **query).get("items", [])
    assert items, f"nothing to delete in {collection}"
    for item in items:
        mesh.api.delete(f"{collection}/{item['metadata']['name']}")


def test_namespace_mode_has_a_global_sidecar_per_namespace(
    istio_mesh: IstioMesh, lazyload_per_namespace: LazyloadInMesh
) -> None:
    """Scenario 6: the fenced namespace's own global-sidecar takes first calls; every Sidecar of
    the namespace names it (`*/global-sidecar.<ns>.svc.<domain>`); the global-sidecar's own
    Service is never fenced (a narrow Sidecar on its proxy would break every first call)."""
    lazyload = lazyload_per_namespace
    gs = lazyload.global_sidecars[NS]
    assert gs.host == f"global-sidecar.{NS}.svc.cluster.local"
    callee = istio_mesh.add_workload(NS, "callee", {"http": 80})
    caller = istio_mesh.add_workload(NS, "caller", {"http": 80})
    lazyload.wait_for(lambda: lazyload.sidecar(NS, "caller"), "no Sidecar of the caller")
    assert f"*/{gs.host}" in _egress(lazyload, caller)
    _learn(lazyload, caller, callee)
    assert lazyload.fence(NS, "global-sidecar") is None
    assert lazyload.sidecar(NS, "global-sidecar") is None


def test_removed_as_documented_calls_keep_working(
    istio_mesh: IstioMesh, lazyload_per_namespace: LazyloadInMesh
) -> None:
    """Scenario 8, docs/install.md "Uninstall": the chart's pre-delete hook
    (`lazyload-global-pilot uninstall`), then Helm deletes the services and the global-sidecar;
    learned calls keep going direct. Then the documented removal of the Sidecars and fences gives
    the workloads the whole mesh back: a Service never called before answers at once."""
    lazyload = lazyload_per_namespace
    known = istio_mesh.add_workload(NS, "known", {"http": 80})
    never_called = istio_mesh.add_workload(NS, "never-called", {"http": 80})
    caller = istio_mesh.add_workload(NS, "caller2", {"http": 80})
    lazyload.wait_for(lambda: lazyload.sidecar(NS, "caller2"), "no Sidecar of the caller")
    _learn(lazyload, caller, known)

    # the pre-delete hook, as the chart's Job runs it, then Helm deletes the Deployments
    hook = subprocess.run(
        [bin_path("lazyload-global-pilot"), "uninstall"],
        env={"LAZYLOAD_KUBE__KUBECONFIG": str(lazyload.kubeconfig), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert hook.returncode == 0, hook.stderr
    assert "to-global-sidecar" in hook.stdout
    filters = istio_mesh.api.list(
        f"/apis/networking.istio.io/v1alpha3/namespaces/{NS}/envoyfilters"
    )
    assert not filters.get("items"), filters
    lazyload.processes.stop()
    for gs in lazyload.global_sidecars.values():
        assert gs.proxy is not None
        istio_mesh.remove_workload(gs.proxy)
    lazyload.global_sidecars.clear()

    status, body = caller.http_get(f"http://{known.host}/after-uninstall")
    assert status == 200, body
    assert json.loads(body)["workload"] == "known"

    # docs/install.md: delete the Sidecars lazyload wrote, then the fences
    _delete_all(
        istio_mesh, f"{SIDECARS}/namespaces/{NS}/sidecars", "app.kubernetes.io/managed-by=lazyload"
    )
    _delete_all(istio_mesh, f"{SERVICEFENCES}/namespaces/{NS}/servicefences")
    never_cluster = f"outbound|80||{never_called.host}"
    caller.wait_for_clusters(never_cluster, timeout=60)
    caller.wait_synced()
    status, body = caller.http_get(f"http://{never_called.host}/whole-mesh-again")
    assert status == 200, body
    assert caller.host_counters(never_cluster)[f"{never_called.ip}:80"]["rq_success"] == 1
