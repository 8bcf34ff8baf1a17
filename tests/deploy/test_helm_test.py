"""The `helm test` script (deploy/helm/lazyload/files/helm_test.py) against a live stack on the
real kube-apiserver: it fails while a lazyload Deployment is not ready, then passes once they all
are - the ServiceFence it creates becomes a Sidecar written by the running sidecar-writer - and
leaves nothing behind."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from deploy_support import CHART
from lazyload_cli.stack import Stack
from lazyload_common.kube import KubeApi, KubeNotFound, api_client
from lazyload_common.settings import KubeSettings

pytestmark = [pytest.mark.e2e, pytest.mark.real]

SCRIPT = CHART / "files" / "helm_test.py"
RELEASE, NAMESPACE, TEST_NAMESPACE = "lazyload", "lazyload-release", "helm-check"
COMPONENTS = ("accesslog-ingest", "fence-reconciler", "sidecar-writer", "global-pilot")


def _deployment(component: str) -> dict[str, Any]:
    labels = {
        "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/part-of": "lazyload",
        "app.kubernetes.io/component": component,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"{RELEASE}-{component}", "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": component, "image": "example.invalid/x:1"}]},
            },
        },
    }


def _run(stack: Stack, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            f"--kubeconfig={stack.kubeconfig}",
            f"--release={RELEASE}",
            f"--namespace={NAMESPACE}",
            f"--test-namespace={TEST_NAMESPACE}",
            f"--timeout={timeout}",
        ],
        capture_output=True,
        text=True,
        timeout=timeout + 60,
    )


def test_helm_test_script_checks_readiness_and_a_fence_round_trip(stack: Stack) -> None:
    kube = KubeApi(api_client(KubeSettings(kubeconfig=stack.kubeconfig)))
    for namespace in (NAMESPACE, TEST_NAMESPACE):
        kube.create("/api/v1/namespaces", {"metadata": {"name": namespace}})
    deployments = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments"
    for component in COMPONENTS:
        kube.create(deployments, _deployment(component))
    # No controller runs them: not ready, so the script fails (and says which) without
    # creating anything.
    failed = _run(stack, timeout=4)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "FAILED: Deployments ready" in failed.stdout
    assert f"{RELEASE}-fence-reconciler 0/1" in failed.stdout
    with pytest.raises(KubeNotFound):
        kube.get(f"/api/v1/namespaces/{TEST_NAMESPACE}/services/lazyload-helm-test")
    for component in COMPONENTS:
        path = f"{deployments}/{RELEASE}-{component}"
        generation = kube.get(path)["metadata"]["generation"]
        status = {"replicas": 1, "readyReplicas": 1, "observedGeneration": generation}
        kube.merge_patch(f"{path}/status", {"status": status})
    passed = _run(stack, timeout=60)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    lines = passed.stdout.splitlines()
    assert sum(line.startswith("ready: ") for line in lines) == len(COMPONENTS)
    assert any(line.startswith("written: Sidecar helm-check/lazyload-helm-test") for line in lines)
    assert lines[-1].startswith("PASSED")
    # It cleaned up after itself.
    for path in (
        f"/api/v1/namespaces/{TEST_NAMESPACE}/services/lazyload-helm-test",
        f"/apis/microservice.slime.io/v1alpha1/namespaces/{TEST_NAMESPACE}/servicefences/lazyload-helm-test",
    ):
        with pytest.raises(KubeNotFound):
            kube.get(path)
