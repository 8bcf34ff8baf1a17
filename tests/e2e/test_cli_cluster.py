"""The operator CLI against a cluster, end to end through the real kube-apiserver's pod proxy.

A real fence-reconciler (its admin port on a private pod address this machine holds, as
`lazyload up --kube real` gives its demo pods: the API server's proxy refuses loopback ones) runs
against the real API server with the chart's admin authentication (TokenReview +
SubjectAccessReview); a Pod object in `mesh-operator` labelled as the chart labels it points the
API server there. Then, with nothing but a kubeconfig: `fences list` shows the learned host,
`explain` the fence, the host and the reconciler's decisions, `graph` the edge, `status` the
reconciler ready through the proxy (and the services that have no pod not), `fences reset` as
a ServiceAccount allowed to `update servicefences/status` clears the learned host (its bearer
token reaches the reconciler in `X-Lazyload-Authorization`: the API server removes
`Authorization`), one not allowed gets 403 (exit 1), and a client-certificate user without
`--token` is told to give one; `fences reset --all -n shop` resets every fence of the namespace
(or, for the one not allowed, none). The two ServiceAccounts have only what docs/install.md tells
users to bind: Kubernetes' `view`, the chart's `lazyload-cli` Role, and (the one that may reset)
`edit` in the fence's namespace - the chart's user roles reach them by aggregation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from lazyload_cli.main import app
from lazyload_cli.podnet import PodNetwork
from lazyload_cli.ports import free_port
from lazyload_cli.processes import ProcessGroup
from lazyload_cli.stack import bin_path
from lazyload_common import events, jetstream, subjects
from lazyload_common.kube import KubeApi, KubeConflict
from lazyload_common.settings import NatsSettings
from lazyload_testing import waiting
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))
from deploy_support import CHART, helm_tool, values_file

pytestmark = [pytest.mark.e2e, pytest.mark.real, pytest.mark.timeout(240)]

SHOP = "shop"
LAZYLOAD = "mesh-operator"
DETAILS = f"details.{SHOP}.svc.cluster.local"
FENCE = f"/apis/microservice.slime.io/v1alpha1/namespaces/{SHOP}/servicefences/productpage"
RBAC = "/apis/rbac.authorization.k8s.io/v1"


def _lazyload(*args: str) -> subprocess.CompletedProcess[str]:
    """The command run in this process (one interpreter start for all of them: seconds each on
    the shared machine), with its exit code, stdout and stderr as a shell would see them."""
    result = CliRunner().invoke(app, list(args))
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def _create(api: KubeApi, path: str, body: dict[str, Any]) -> None:
    with contextlib.suppress(KubeConflict):
        api.create(path, body)


def _until(probe: Any, timeout: float, what: str) -> Any:
    return waiting.wait_for(probe, timeout=timeout, interval=0.2, what=what)


def _service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": SHOP},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 9080}]},
    }


def _user_roles(tmp_path: Path) -> list[dict[str, Any]]:
    """The chart's roles for lazyload's users (templates/user-roles.yaml), rendered for a
    release `lazyload` in `mesh-operator`."""
    values = values_file(tmp_path, {})
    result = helm_tool("render", str(CHART), "--values", values, "--namespace", LAZYLOAD)
    objects = [m["object"] for m in json.loads(result.stdout)["manifests"]]
    return [
        o
        for o in objects
        if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "user-roles"
    ]


def _bind(api: KubeApi, name: str, role: tuple[str, str], who: list[str], namespace: str) -> None:
    """Bind `who` (ServiceAccounts of LAZYLOAD) to `role` (kind, name); cluster-wide without a
    namespace."""
    where = (
        f"{RBAC}/namespaces/{namespace}/rolebindings"
        if namespace
        else f"{RBAC}/clusterrolebindings"
    )
    kind, role_name = role
    body = {
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role_name},
        "subjects": [{"kind": "ServiceAccount", "name": n, "namespace": LAZYLOAD} for n in who],
    }
    _create(api, where, body)


def _operators(api: KubeApi, tmp_path: Path) -> None:
    """Two ServiceAccounts bound as docs/install.md tells users to bind people: Kubernetes'
    `view` ClusterRole and the chart's `lazyload-cli` Role in lazyload's namespace; only
    `operator` also has `edit` in `shop`. The chart's user roles join `view` and `edit` by
    aggregation, so only `operator` may `update servicefences/status` there (what a reset needs)."""
    for name in ("operator", "bystander"):
        _create(api, f"/api/v1/namespaces/{LAZYLOAD}/serviceaccounts", {"metadata": {"name": name}})
    for role in _user_roles(tmp_path):
        namespace = role["metadata"].get("namespace")
        kind = "roles" if role["kind"] == "Role" else "clusterroles"
        where = f"{RBAC}/namespaces/{namespace}/{kind}" if namespace else f"{RBAC}/{kind}"
        _create(api, where, role)
    both = ["operator", "bystander"]
    _bind(api, "lazyload-cli-view", ("ClusterRole", "view"), both, "")
    _bind(api, "lazyload-cli", ("Role", "lazyload-cli"), both, LAZYLOAD)
    _bind(api, "lazyload-cli-edit", ("ClusterRole", "edit"), ["operator"], SHOP)

    def aggregated() -> bool:
        """The aggregation controller copied the chart's rules into `view` and `edit`."""
        for role, resource in (("view", "servicefences"), ("edit", "servicefences/status")):
            rules = api.get(f"{RBAC}/clusterroles/{role}").get("rules") or []
            if not any(resource in r.get("resources", []) for r in rules):
                return False
        return True

    _until(aggregated, 30, "the chart's user roles aggregated into view and edit")


def _reconciler_pod(api: KubeApi, ip: str, port: int) -> None:
    """A Pod object as the chart's, Running at `ip` (there are no kubelets: status by hand)."""
    pods = f"/api/v1/namespaces/{LAZYLOAD}/pods"
    body = {
        "metadata": {
            "name": "fence-reconciler-0",
            "labels": {
                "app.kubernetes.io/part-of": "lazyload",
                "app.kubernetes.io/component": "fence-reconciler",
            },
        },
        "spec": {
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "fence-reconciler",
                    "image": "ghcr.io/lazyload/fence-reconciler:test",
                    "ports": [{"name": "admin", "containerPort": port}],
                }
            ],
        },
    }
    # the ServiceAccount admission needs the namespace's `default` account (made by the
    # controller-manager a moment after the namespace)
    _until(lambda: _try_create(api, pods, body), 30, "the Pod created")
    api.merge_patch(
        f"{pods}/fence-reconciler-0/status",
        {"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}},
    )


def _try_create(api: KubeApi, path: str, body: dict[str, Any]) -> bool:
    try:
        api.create(path, body)
    except KubeConflict:
        return True
    except Exception:
        return False
    return True


async def _publish_edge(nats_url: str) -> None:
    nc = await jetstream.connect(NatsSettings(url=nats_url), name="test")
    try:
        edge = events.DependencyObserved(
            source_namespace=SHOP,
            source_name="productpage",
            destination_host=DETAILS,
            destination_namespace=SHOP,
            destination_service="details",
            first_seen=time.time(),
        )
        await jetstream.publish(nc.jetstream(), subjects.deps(SHOP, "productpage"), edge)
    finally:
        await nc.close()


def test_fences_explain_and_status_through_the_pod_proxy(
    real_kube: Any, nats_url: str, tmp_path: Path
) -> None:
    api = KubeApi(real_kube.api_client())
    for ns in (LAZYLOAD, SHOP):
        _create(api, "/api/v1/namespaces", {"metadata": {"name": ns}})
    for name in ("productpage", "details"):
        _create(api, f"/api/v1/namespaces/{SHOP}/services", _service(name))
    _operators(api, tmp_path)
    operator = real_kube.kubeconfig_for(LAZYLOAD, "operator", tmp_path / "operator.kubeconfig")
    bystander = real_kube.kubeconfig_for(LAZYLOAD, "bystander", tmp_path / "bystander.kubeconfig")
    processes = ProcessGroup(tmp_path / "logs")
    with PodNetwork() as network:
        (ip,) = network.allocate(1)
        port = free_port(ip)
        env = {
            "LAZYLOAD_NATS__URL": nats_url,
            "LAZYLOAD_KUBE__KUBECONFIG": str(real_kube.kubeconfig),
            "LAZYLOAD_ADMIN__HOST": ip,
            "LAZYLOAD_ADMIN__PORT": str(port),
            "LAZYLOAD_ADMIN__AUTH": "kubernetes",
        }
        try:
            processes.spawn("fence-reconciler", [bin_path("lazyload-fence-reconciler")], env=env)
            processes.wait_http("fence-reconciler", f"http://{ip}:{port}/readyz", timeout=90)
            _reconciler_pod(api, ip, port)
            asyncio.run(_publish_edge(nats_url))

            def learned() -> bool:
                fence = api.get(FENCE)
                return DETAILS in ((fence.get("status") or {}).get("learned") or {})

            _until(learned, 30, "details learned by shop/productpage")
            cluster = ["--kubeconfig", str(operator)]

            listed = _lazyload("fences", "list", *cluster)
            assert listed.returncode == 0, listed.stderr
            fences = {f"{f['namespace']}/{f['name']}": f for f in json.loads(listed.stdout)}
            assert fences[f"{SHOP}/productpage"]["hosts"] == 1, fences  # details

            explained = _lazyload("explain", f"{SHOP}/productpage", DETAILS, *cluster, "-o", "json")
            assert explained.returncode == 0, explained.stderr
            out = json.loads(explained.stdout)
            assert out["fence"]["name"] == "productpage"
            assert any(h["host"] == DETAILS and h["first_seen"] for h in out["hosts"]), out
            assert out["decisions"], out  # the reconciler's record, read through the proxy

            graph = _lazyload("graph", "-n", SHOP, "-o", "json", *cluster)
            assert graph.returncode == 0, graph.stderr
            edges = [(e["source"], e["target"]) for e in json.loads(graph.stdout)["edges"]]
            assert (f"{SHOP}/productpage", f"{SHOP}/details") in edges, edges

            status = _lazyload("status", *cluster, "-o", "json")
            assert status.returncode == 6, status.stderr  # the other services have no pod
            services = {s["service"]: s["instances"] for s in json.loads(status.stdout)["services"]}
            assert services["fence-reconciler"] == [
                {"instance": "fence-reconciler-0", "ready": True, "failing": []}
            ]
            assert not services["sidecar-writer"][0]["ready"]

            refused = _lazyload(
                "fences", "reset", f"{SHOP}/productpage", "--kubeconfig", str(bystander)
            )
            assert refused.returncode == 1, refused
            assert "403" in refused.stderr and "Traceback" not in refused.stderr, refused.stderr
            assert learned()  # nothing was reset

            certificate = _lazyload(
                "fences", "reset", f"{SHOP}/productpage", "--kubeconfig", str(real_kube.kubeconfig)
            )
            assert certificate.returncode == 1, certificate
            assert "--token" in certificate.stderr, certificate.stderr

            reset = _lazyload("fences", "reset", f"{SHOP}/productpage", *cluster)
            assert reset.returncode == 0, reset.stderr
            assert not learned()
            gone = _lazyload("fences", "reset", f"{SHOP}/nothing", *cluster)
            assert gone.returncode == 4, gone

            # every fence of a namespace: the bystander is refused each, the operator resets all
            asyncio.run(_publish_edge(nats_url))
            _until(learned, 30, "details learned again")
            every = ["fences", "reset", "--all", "-n", SHOP]
            refused = _lazyload(*every, "--kubeconfig", str(bystander))
            assert refused.returncode == 1 and json.loads(refused.stdout) == [], refused
            assert "403" in refused.stderr and learned()
            reset = _lazyload(*every, *cluster)
            assert reset.returncode == 0, reset.stderr
            names = [d["name"] for d in json.loads(reset.stdout)]
            assert "productpage" in names and names == sorted(names), names
            assert not learned()
            empty = _lazyload("fences", "reset", "--all", "-n", "nowhere", *cluster)
            assert empty.returncode == 0 and json.loads(empty.stdout) == [], empty
        finally:
            processes.stop()
