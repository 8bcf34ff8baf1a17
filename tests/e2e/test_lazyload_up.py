"""`lazyload up` as a user runs it: a separate process that writes endpoints.json, answers
`kubectl get sidecars -A` and `kubectl create namespace` through its kubeconfig (the emulator's,
or with `--kube real` an admin one of etcd + kube-apiserver), and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent


def _start_up(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """`lazyload up --state-dir <tmp>/state ARGS` in its own session, once endpoints.json is
    written: the process and the endpoints."""
    state = tmp_path / "state"
    log = (tmp_path / "up.log").open("wb")
    process = subprocess.Popen(
        [str(BIN / "lazyload"), "up", "--state-dir", str(state), *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    endpoints_file = state / "endpoints.json"
    deadline = time.monotonic() + 120
    while not endpoints_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            _stop(process)
            raise AssertionError(f"no endpoints.json: {(tmp_path / 'up.log').read_text()}")
        time.sleep(0.2)
    return process, json.loads(endpoints_file.read_text())


def _kubectl(endpoints: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    """kubectl `args` against the stack's API server (its kubeconfig)."""
    env = {**os.environ, "KUBECONFIG": endpoints["kubeconfig"]}
    return subprocess.run(
        [str(BIN / "kubectl"), *args], env=env, capture_output=True, text=True, timeout=30
    )


def _stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


KUBE_PROCESSES = {
    "emulator": {"kube-emulator"},
    "real": {"etcd", "kube-apiserver", "kube-controller-manager"},
}


@pytest.mark.parametrize("kube", ["emulator", pytest.param("real", marks=pytest.mark.real)])
def test_up_writes_endpoints_and_serves_kubectl(tmp_path: Path, kube: str) -> None:
    process, endpoints = _start_up(tmp_path, "--kube", kube)
    try:
        for key in (
            "nats_url",
            "kubeconfig",
            "als_grpc",
            "xds_grpc",
            "global_sidecar_http",
            "admin",
        ):
            assert endpoints[key], key
        assert set(endpoints["admin"]) == {
            "accesslog-ingest",
            "fence-reconciler",
            "sidecar-writer",
            "global-pilot",
        }
        for url in endpoints["admin"].values():
            assert httpx.get(f"{url}/readyz").status_code == 200
        # NATS authentication is on: one NKey identity per service and the observer (issue 16)
        assert set(endpoints["nats_credentials"]) == {
            "accesslog-ingest",
            "fence-reconciler",
            "sidecar-writer",
            "observer",
            "admin",
        }
        result = _kubectl(endpoints, "get", "sidecars", "-A")
        assert result.returncode == 0, result.stderr
        result = _kubectl(endpoints, "get", "crd", "servicefences.microservice.slime.io")
        assert result.returncode == 0 and "servicefences" in result.stdout, result.stderr
        assert endpoints["kube"] == kube
        assert KUBE_PROCESSES[kube] <= set(endpoints["pids"]), endpoints["pids"]
        # kubectl's typed commands send protobuf: both servers take them.
        result = _kubectl(endpoints, "create", "namespace", "shop")
        assert result.returncode == 0, result.stderr
    finally:
        code = _stop(process)
    assert code == 0, (tmp_path / "up.log").read_text()
    pids = endpoints["pids"]
    for name, pid in pids.items():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        raise AssertionError(f"{name} (pid {pid}) still running after lazyload up stopped")


def test_up_restarts_a_service_that_dies(tmp_path: Path) -> None:
    """As a Deployment restarts its pod: a service killed under `lazyload up` is started again
    (back-off 1 s), endpoints.json names its new pid, and it serves again."""
    process, before = _start_up(tmp_path)
    endpoints_file = tmp_path / "state" / "endpoints.json"
    try:
        victim = before["pids"]["fence-reconciler"]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while True:
            after = json.loads(endpoints_file.read_text())
            pid = after["pids"]["fence-reconciler"]
            if pid != victim:
                break
            assert time.monotonic() < deadline, "fence-reconciler was not restarted"
            time.sleep(0.2)
        os.kill(pid, 0)  # alive
        ready = before["admin"]["fence-reconciler"] + "/readyz"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(ready, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "restarted fence-reconciler not ready"
            time.sleep(0.2)
        assert after["pids"]["sidecar-writer"] == before["pids"]["sidecar-writer"]
    finally:
        _stop(process)
