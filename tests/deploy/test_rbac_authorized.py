"""The chart's least-privilege RBAC is enough for the services' real Kubernetes calls.

The whole local stack (`lazyload_cli.stack.Stack`: nats-server, the four service processes,
the global-sidecar Envoy) runs against the run's API server: a real kube-apiserver with RBAC (its
audit log records every request), or the Kubernetes API emulator started with `--authorize`.
The chart's rendered ServiceAccounts, ClusterRoles, Roles and bindings are applied to it, and
each service gets a kubeconfig whose bearer token is its own ServiceAccount's
(`system:serviceaccount:mesh-operator:lazyload-<service>`; a TokenRequest token on the real server) plus the chart's settings for it
(LAZYLOAD_MESH__*, ...). Then the demo traffic runs until every Sidecar is written: no request
of any service may have been refused (403), and the authorizer is shown to be on. The narrowed
rules of issue 16 hold: a deleted manual fence's tombstone lands in the reconciler's ConfigMap
while it is refused `patch services`; global-pilot writes its EnvoyFilter in Istio's root
namespace only (refused elsewhere: uninstall's prune reports such a stale one, deletes the rest).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import CHART, RBAC_KINDS, apply_rendered, helm_tool, values_file
from lazyload_kube_emulator import AdminClient, kubeconfig_dict
from lazyload_kube_emulator.authz import service_account_token
from lazyload_testing.kube_real import AUDIT_POLICY, RealKube, kube_mode

pytestmark = [pytest.mark.e2e, pytest.mark.envoy]

SERVICES = ("accesslog-ingest", "fence-reconciler", "sidecar-writer", "global-pilot")
NAMESPACE = "mesh-operator"
PREFIX = "lazyload"
# Settings the Stack decides (where things listen) rather than the chart.
# the stack's own: addresses, NATS identities, the ALS port's TLS (`--secure`) and kubeconfigs
STACK_OWNED = (
    "_HOST",
    "_PORT",
    "_PORTS",
    "LAZYLOAD_NATS__",
    "LAZYLOAD_ALS__",
    "LAZYLOAD_GRPC__TLS_",
    "LAZYLOAD_GRPC__REQUIRE_CLIENT_CERT",
    "LAZYLOAD_KUBE__",
)


def _render(tmp_path: Path) -> list[dict[str, Any]]:
    # the stack's global-sidecar is a bare Envoy (no istio-proxy here): the chart's setting for it
    path = values_file(tmp_path, {"globalSidecar": {"inMesh": False}})
    result = helm_tool("render", str(CHART), "--values", path, "--namespace", NAMESPACE)
    return [m["object"] for m in json.loads(result.stdout)["manifests"]]


def _chart_env(objects: list[dict[str, Any]], service: str) -> dict[str, str]:
    deployment = next(
        o
        for o in objects
        if o["kind"] == "Deployment" and o["metadata"]["name"] == f"{PREFIX}-{service}"
    )
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {
        e["name"]: e["value"]
        for e in container.get("env", [])
        if "value" in e and not any(part in e["name"] for part in STACK_OWNED)
    }


@pytest.fixture(scope="module")
def authorized_stack(tmp_path_factory: pytest.TempPathFactory):
    from kubernetes import config
    from lazyload_cli.stack import Stack, StackConfig

    objects = _render(tmp_path_factory.mktemp("values"))
    mode = kube_mode()
    state_dir = tmp_path_factory.mktemp("authorized-stack")
    audit_log = state_dir / "audit.log"
    policy = state_dir / "audit-policy.yaml"
    policy.write_text(AUDIT_POLICY)

    class AuthorizedStack(Stack):
        def kube_ready(self) -> None:
            with config.new_client_from_config(str(self.kubeconfig)) as api:  # the admin
                # As `helm install` leaves it: the RBAC, and the Services (the global-sidecar's
                # one, which global-pilot then updates by name) and ConfigMaps.
                self.applied = apply_rendered(api, objects, RBAC_KINDS | {"Service", "ConfigMap"})
            self.tokens: dict[str, str] = {}
            for service in SERVICES:
                account = f"{PREFIX}-{service}"
                path = self.config.state_dir / f"kubeconfig-{service}"
                if self.control_plane is not None:  # a real TokenRequest token
                    self.control_plane.kubeconfig_for(NAMESPACE, account, path)
                    self.tokens[service] = f"system:serviceaccount:{NAMESPACE}:{account}"
                else:
                    document = kubeconfig_dict(self.endpoints_kube_url())
                    token = service_account_token(NAMESPACE, account)
                    document["users"][0]["user"]["token"] = token
                    path.write_text(yaml.safe_dump(document))
                    self.tokens[service] = token

        def endpoints_kube_url(self) -> str:
            return f"http://{self.config.host}:{self.config.kube_port}"

        def requests(self) -> list[Any]:
            """Every API request so far: the emulator's log, or the real server's audit log."""
            if self.control_plane is not None:
                return RealKube(self.control_plane, audit_log).requests()
            return AdminClient(self.endpoints_kube_url()).requests()

        def _service_env(self, name: str) -> dict[str, str]:
            env = super()._service_env(name)
            return {
                **_chart_env(objects, name),
                **env,
                "LAZYLOAD_KUBE__KUBECONFIG": str(self.config.state_dir / f"kubeconfig-{name}"),
            }

    args = (
        ("--authorize",)
        if mode == "emulator"
        else (
            f"--audit-policy-file={policy}",
            f"--audit-log-path={audit_log}",
            "--audit-log-format=json",
            "--audit-log-mode=blocking",
        )
    )
    config_ = StackConfig(state_dir=state_dir, log_level="DEBUG", kube=mode, kube_args=args)
    with AuthorizedStack(config_) as stack:
        yield stack


def test_least_privilege_roles_suffice_for_the_real_calls(authorized_stack) -> None:
    from lazyload_cli import demo
    from lazyload_common.kube import KubeApi, KubeError, api_client
    from lazyload_common.settings import KubeSettings

    stack = authorized_stack
    # four services, the global-sidecar's own identity (which has no role) and the `helm test`
    # Pod's (Roles in its namespaces only)
    assert stack.applied["ServiceAccount"] == 6 and stack.applied["ClusterRoleBinding"] == 4
    learned, done = asyncio.run(
        demo.run_traffic(stack.endpoints, demo.Console(quiet=True), timeout=45)
    )
    requests = stack.requests()
    refused = [r for r in requests if r.status in (401, 403)]
    assert not refused, f"requests refused by the chart's RBAC: {refused}"
    by_user: dict[str, set[tuple[str, str]]] = {}
    for r in requests:
        by_user.setdefault(r.user, set()).add((r.verb, r.path))
    for service in SERVICES:
        assert by_user.get(stack.tokens[service]), service
    # global-pilot updates the chart's global-sidecar Service by name (Role resourceNames). Its
    # mesh-side apply runs in its own retry loop (backoff up to 30 s), so wait for it.
    pilot_user = stack.tokens["global-pilot"]
    named = f"/api/v1/namespaces/{NAMESPACE}/services/{PREFIX}-global-sidecar"
    deadline = time.monotonic() + 45
    while True:
        calls = {(r.verb, r.path, r.status) for r in stack.requests() if r.user == pilot_user}
        verbs = {verb for verb, path, status in calls if path == named and status < 400}
        if verbs >= {"GET", "PATCH"} or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert verbs >= {"GET", "PATCH"}, sorted(c for c in calls if "services" in c[1])
    assert not [c for c in calls if c[2] in (401, 403)]
    writer = by_user[stack.tokens["sidecar-writer"]]
    assert any(v == "POST" and p.endswith("/sidecars") for v, p in writer)
    fences = by_user[stack.tokens["fence-reconciler"]]
    assert any(v == "POST" and p.endswith("/servicefences") for v, p in fences)
    assert done, f"not learned: {[x for x in learned if x.sidecar_written is None]}"
    stack.check_alive()
    # The authorizer is on: a service's token cannot do what its Role does not grant.
    writer = stack.config.state_dir / "kubeconfig-sidecar-writer"
    kube = KubeApi(api_client(KubeSettings(kubeconfig=writer)))
    with pytest.raises(KubeError) as error:
        kube.get(f"/api/v1/namespaces/{NAMESPACE}/services")
    assert error.value.status == 403
    _narrowed_rules_of_issue_16(stack)


def _narrowed_rules_of_issue_16(stack: Any) -> None:
    from lazyload_common.kube import KubeApi, KubeError, api_client
    from lazyload_common.settings import KubeSettings

    def as_(service: str) -> KubeApi:
        path = stack.config.state_dir / f"kubeconfig-{service}"
        return KubeApi(api_client(KubeSettings(kubeconfig=path)))

    admin = KubeApi(api_client(KubeSettings(kubeconfig=stack.kubeconfig)))
    services = "/api/v1/namespaces/default/services"
    fences = "/apis/microservice.slime.io/v1alpha1/namespaces/default/servicefences"
    labels = {"slime.io/serviceFenced": "false"}  # no auto fence races the manual one
    admin.create(
        services,
        {"metadata": {"name": "manual", "labels": labels}, "spec": {"ports": [{"port": 80}]}},
    )
    time.sleep(1)  # the reconciler's Services watch sees it before the fence comes and goes
    admin.create(
        fences,
        {
            "apiVersion": "microservice.slime.io/v1alpha1",
            "kind": "ServiceFence",
            "metadata": {"name": "manual"},
            "spec": {"enable": True},
        },
    )
    time.sleep(1)
    admin.delete(f"{fences}/manual")
    tombstones = f"/api/v1/namespaces/{NAMESPACE}/configmaps/{PREFIX}-fence-tombstones"
    deadline = time.monotonic() + 30
    entry = None
    while entry is None and time.monotonic() < deadline:
        with contextlib.suppress(KubeError):
            entry = (admin.get(tombstones).get("data") or {}).get("default_manual")
        time.sleep(0.5)
    assert entry and ";serviceFenced=false;uid=" in entry
    with pytest.raises(KubeError) as error:
        as_("fence-reconciler").merge_patch(
            f"{services}/manual", {"metadata": {"labels": {"x": "y"}}}
        )
    assert error.value.status == 403
    # global-pilot: its EnvoyFilter only in Istio's root namespace (cluster mode)
    filters = "/apis/networking.istio.io/v1alpha3/namespaces/{ns}/envoyfilters"
    pilot = as_("global-pilot")
    assert pilot.get(filters.format(ns="istio-system") + "/to-global-sidecar")
    stale = {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": {
            "name": "to-global-sidecar",
            "labels": {"app.kubernetes.io/managed-by": "lazyload-global-pilot"},
        },
        "spec": {"configPatches": []},
    }
    with pytest.raises(KubeError) as error:
        pilot.create(filters.format(ns="default"), stale)
    assert error.value.status == 403
    admin.create(filters.format(ns="default"), stale)  # as a former namespace mode left it
    # the chart's pre-delete Job: deletes what it may, names the one it may not, succeeds
    script = Path(sys.executable).parent / "lazyload-global-pilot"
    kubeconfig = stack.config.state_dir / "kubeconfig-global-pilot"
    env = {**os.environ, "LAZYLOAD_KUBE__KUBECONFIG": str(kubeconfig)}
    done = subprocess.run([str(script), "uninstall"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (
        "not allowed to remove 1, delete them by hand: EnvoyFilter/default/to-global-sidecar"
        in done.stdout
    )
    assert "EnvoyFilter/istio-system/to-global-sidecar" in done.stdout.splitlines()[0]
    with pytest.raises(KubeError) as error:
        admin.get(filters.format(ns="istio-system") + "/to-global-sidecar")
    assert error.value.status == 404
    refused = [
        r
        for r in stack.requests()
        if r.status in (401, 403) and r.user == stack.tokens["fence-reconciler"]
    ]
    assert len(refused) == 1 and refused[0].verb == "PATCH", refused
