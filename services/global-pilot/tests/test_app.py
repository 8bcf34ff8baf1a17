"""global-pilot as a service: `run()` on the API server of the run (`kube_cluster`), serving a real
Envoy.

Covers: `run` binds free ports and reports them (`on_bound`, `GET /xds`); `ready` is set and
`/readyz` answers 200 once the kinds are listed and the first snapshot is set; Services with
Endpoints or EndpointSlices written through the official client become routes in Envoy, a new
Service within a second, and a deleted one gives 404 again; `stop` ends `run` cleanly; bad
settings fail before anything starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from lazyload_common import errors, kube
from lazyload_common.settings import KubeSettings
from lazyload_global_pilot import app, bootstrap
from lazyload_global_pilot.settings import GlobalPilotSettings
from lazyload_testing.kube import KubeEmulator
from lazyload_testing.kube_real import RealKube


@pytest.fixture
def kube_emulator_crd_dirs() -> list[Path]:
    """global-pilot reads only built-in kinds: no CRDs to preload."""
    return []


@dataclass
class Running:
    settings: GlobalPilotSettings
    bound: app.BoundPorts
    api: kube.KubeApi

    async def create(self, path: str, body: dict[str, Any]) -> None:
        await asyncio.to_thread(self.api.create, path, body)

    async def delete(self, path: str) -> None:
        await asyncio.to_thread(self.api.delete, path)


@pytest.fixture
async def pilot(kube_cluster: RealKube | KubeEmulator, free_port: Any) -> AsyncIterator[Running]:
    """global-pilot's `run()` on the API server, every port free, ready."""
    kubeconfig = kube_cluster.kubeconfig
    settings = GlobalPilotSettings.model_validate(
        {
            "kube": {"kubeconfig": kubeconfig},
            "admin": {"host": "127.0.0.1", "port": 0},
            "xds": {"host": "127.0.0.1", "port": 0},
            "listener": {"address": "127.0.0.1", "ports": [free_port()]},
            "als": {"enabled": False},
            "watch": {"debounce": 0.05, "service_entries": False},
        }
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    bound: list[app.BoundPorts] = []
    task = asyncio.ensure_future(app.run(settings, stop=stop, ready=ready, on_bound=bound.append))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        api = kube.KubeApi(kube.api_client(KubeSettings(kubeconfig=kubeconfig)))
        yield Running(settings, bound[0], api)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def _service(name: str, port: int = 9080) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"ports": [{"name": "http", "port": port, "targetPort": "web"}]},
    }


def _endpoints(name: str, address: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": name, "namespace": "default"},
        "subsets": [{"addresses": [{"ip": address}], "ports": [{"name": "http", "port": port}]}],
    }


def _slice(name: str, address: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{name}-1",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": name},
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
        "ports": [{"name": "http", "port": port}],
    }


SERVICES = "/api/v1/namespaces/default/services"
ENDPOINTS = "/api/v1/namespaces/default/endpoints"
SLICES = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"


async def test_run_reports_ports_and_readiness(pilot: Running) -> None:
    assert pilot.bound.xds > 0 and pilot.bound.admin > 0
    admin_url = f"http://127.0.0.1:{pilot.bound.admin}"
    async with httpx.AsyncClient(trust_env=False) as client:
        ready = await client.get(admin_url + "/readyz")
        status = (await client.get(admin_url + "/xds")).json()
        metrics = (await client.get(admin_url + "/metrics")).text
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"xds": True, "kube": True, "snapshot": True}
    assert status["port"] == pilot.bound.xds
    assert status["version"]
    assert "lazyload_global_pilot_renders_total" in metrics


@pytest.mark.envoy
async def test_kube_services_become_envoy_routes(
    pilot: Running, envoy_runner: Any, upstream_factory: Any, pod_address: str
) -> None:
    details = upstream_factory("details", pod_address)
    ratings = upstream_factory("ratings", pod_address)
    await pilot.create(SERVICES, _service("details"))
    await pilot.create(ENDPOINTS, _endpoints("details", pod_address, details.port))
    await envoy_runner(bootstrap.render_bootstrap(xds_host="127.0.0.1", xds_port=pilot.bound.xds))
    listener = f"http://127.0.0.1:{pilot.settings.listener.ports[0]}/"
    async with httpx.AsyncClient(trust_env=False, timeout=5) as client:

        async def status_of(host: str) -> int:
            return (await client.get(listener, headers={"Host": host})).status_code

        assert await _within(5, lambda: status_of("details.default.svc.cluster.local:9080"), 200)
        started = time.monotonic()
        await pilot.create(SERVICES, _service("ratings"))
        await pilot.create(SLICES, _slice("ratings", pod_address, ratings.port))
        assert await _within(1, lambda: status_of("ratings:9080"), 200)
        assert time.monotonic() - started < 1.0
        await pilot.delete(SERVICES + "/details")
        assert await _within(2, lambda: status_of("details.default:9080"), 404)


async def _within(seconds: float, probe: Any, expected: int) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        with contextlib.suppress(httpx.TransportError):
            if await probe() == expected:
                return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)


async def test_bad_settings_fail_before_anything_starts() -> None:
    settings = GlobalPilotSettings.model_validate({"listener": {"ports": []}})
    with pytest.raises(errors.ConfigError):
        await app.run(settings)
