"""Running the emulator: the `lazyload-kube-emulator` command and the Python API.

Covers: the CLI on `--port 0` writing a kubeconfig once listening (context `lazyload-emulator`,
dummy token), preloading `--crds` directories, creating `--namespace`s, exiting 0 on SIGTERM, saving and restoring
objects with `--state-file`; printing the kubeconfig when no `--kubeconfig-out` is given
(with the `--advertise-url` server in it; a non-http URL is a usage error);
`EmulatorServer` started and stopped on the test's own event loop (ending open watches);
`run_in_thread` with a custom Service CIDR.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from kubernetes import client, config, watch
from lazyload_kube_emulator import EmulatorConfig, EmulatorServer, kubeconfig_dict, run_in_thread
from lazyload_kube_emulator.__main__ import parse_args
from lazyload_testing.kube import repo_root

COMMAND = [sys.executable, "-m", "lazyload_kube_emulator"]


def _start(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, Path]:
    kubeconfig = tmp_path / "kubeconfig"
    process = subprocess.Popen(
        [*COMMAND, "--port", "0", "--kubeconfig-out", str(kubeconfig), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not kubeconfig.exists():
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "the emulator never wrote its kubeconfig"
        time.sleep(0.05)
    return process, kubeconfig


def _stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=15)
    return process.returncode


def test_cli_writes_kubeconfig_and_stops_on_sigterm(tmp_path):
    crds = repo_root() / "deploy" / "crds" / "istio"
    state = tmp_path / "state.json"
    process, kubeconfig = _start(
        tmp_path, "--crds", str(crds), "--state-file", str(state), "--namespace", "mesh-operator"
    )
    try:
        document = yaml.safe_load(kubeconfig.read_text())
        assert document["current-context"] == "lazyload-emulator"
        assert document["clusters"][0]["cluster"]["server"].startswith("http://127.0.0.1:")
        assert document["users"][0]["user"]["token"]
        with config.new_client_from_config(str(kubeconfig), persist_config=False) as api:
            custom = client.CustomObjectsApi(api)
            body = {
                "apiVersion": "networking.istio.io/v1",
                "kind": "Sidecar",
                "metadata": {"name": "kept"},
                "spec": {},
            }
            custom.create_namespaced_custom_object(
                "networking.istio.io", "v1", "default", "sidecars", body
            )
            namespaces = client.CoreV1Api(api).list_namespace().items
            names = {n.metadata.name for n in namespaces if n.metadata}
            assert {"default", "istio-system", "mesh-operator"} <= names
    finally:
        assert _stop(process) == 0
    assert "kept" in state.read_text()
    kubeconfig.unlink()
    process, kubeconfig = _start(tmp_path, "--state-file", str(state))
    try:
        with config.new_client_from_config(str(kubeconfig), persist_config=False) as api:
            custom = client.CustomObjectsApi(api)
            kept = cast(  # a custom object: its JSON body
                dict[str, Any],
                custom.get_namespaced_custom_object(
                    "networking.istio.io", "v1alpha3", "default", "sidecars", "kept"
                ),
            )
            assert kept["apiVersion"] == "networking.istio.io/v1alpha3"
    finally:
        assert _stop(process) == 0


def test_cli_prints_kubeconfig_without_out_path():
    process = subprocess.Popen(
        [*COMMAND, "--port", "0", "--advertise-url", "http://kube-emulator:6443/"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None  # stdout=PIPE
        lines = []
        while not lines or not lines[-1].startswith("preferences:"):
            lines.append(process.stdout.readline())
        assert lines[0].startswith("apiVersion: v1")
        document = yaml.safe_load("".join(lines))
        assert document == kubeconfig_dict("http://kube-emulator:6443")
    finally:
        assert _stop(process) == 0


def test_cli_rejects_an_advertise_url_that_is_not_http(capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--advertise-url", "kube-emulator:6443"])
    assert exit_.value.code == 2
    assert "--advertise-url" in capsys.readouterr().err
    assert parse_args(["--advertise-url", "https://k:1/"]).advertise_url == "https://k:1"


async def test_emulator_server_on_the_running_loop(tmp_path):
    async with EmulatorServer(port=0) as server:
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
        api = config.new_client_from_config(str(kubeconfig), persist_config=False)
        core = client.CoreV1Api(api)
        stream = watch.Watch().stream(core.list_namespaced_config_map, "default")
        names = await asyncio.to_thread(
            lambda: [n.metadata.name for n in core.list_namespace().items if n.metadata]
        )
        assert "default" in names
        pending = asyncio.create_task(asyncio.to_thread(lambda: list(stream)))
        await asyncio.sleep(0.3)
    assert await asyncio.wait_for(pending, 10) == []
    api.close()


def test_run_in_thread_with_custom_service_cidr(tmp_path):
    settings = EmulatorConfig(service_cidr="10.200.0.0/24", namespaces=("default", "extra"))
    with run_in_thread(config=settings) as handle:
        kubeconfig = handle.write_kubeconfig(tmp_path / "kubeconfig")
        with config.new_client_from_config(str(kubeconfig), persist_config=False) as api:
            core = client.CoreV1Api(api)
            svc = core.create_namespaced_service(
                "extra",
                client.V1Service.model_validate(
                    {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 1}]}}
                ),
            )
            assert svc.spec is not None and svc.spec.cluster_ip is not None
            assert svc.spec.cluster_ip.startswith("10.200.0.")
            namespaces = core.list_namespace().items
            names = [n.metadata.name for n in namespaces if n.metadata and n.metadata.name]
            assert sorted(names) == ["default", "extra"]
