"""global-pilot's `run()` with `auto_port` and the mesh-side resources on, a real Envoy behind it.

Covers: with no static port, a Service created through the official client opens a listener on
its port in Envoy that routes to it, and the port is added to the global-sidecar Service and to
`to-global-sidecar` (both validated and applied through the Kubernetes API); after the Service
is deleted the port stays (grow-only) in the listeners and in both objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import httpx
import pytest
from lazyload_common import kube
from lazyload_common.settings import KubeSettings
from lazyload_global_pilot import app, bootstrap
from lazyload_global_pilot.settings import GlobalPilotSettings
from lazyload_testing.kube import KubeEmulator
from lazyload_testing.kube_real import RealKube

pytestmark = pytest.mark.envoy
GS_SERVICE = "/api/v1/namespaces/mesh-operator/services/global-sidecar"
GS_FILTER = (
    "/apis/networking.istio.io/v1alpha3/namespaces/istio-system/envoyfilters/to-global-sidecar"
)


async def _until(probe: Any, within: float = 5.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        with contextlib.suppress(httpx.TransportError, kube.KubeNotFound):
            if value := await probe():
                return value
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_service_ports_become_wormhole_ports(
    kube_cluster: RealKube | KubeEmulator,
    envoy_runner: Any,
    upstream_factory: Any,
    free_port: Any,
    pod_address: str,
) -> None:
    api = kube.KubeApi(kube.api_client(KubeSettings(kubeconfig=kube_cluster.kubeconfig)))
    # The namespaces of the global-sidecar (the chart's) and of Istio's root (istio-system).
    for namespace in ("mesh-operator", "istio-system"):
        with contextlib.suppress(kube.KubeConflict):
            api.create("/api/v1/namespaces", {"metadata": {"name": namespace}})
    settings = GlobalPilotSettings.model_validate(
        {
            "kube": {"kubeconfig": kube_cluster.kubeconfig},
            "admin": {"host": "127.0.0.1", "port": 0},
            "xds": {"host": "127.0.0.1", "port": 0},
            "listener": {"address": "127.0.0.1", "ports": [], "auto_port": True},
            "global_sidecar": {"apply": True},
            "als": {"enabled": False},
            "watch": {"debounce": 0.05},
        }
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    bound: list[app.BoundPorts] = []
    task = asyncio.ensure_future(app.run(settings, stop=stop, ready=ready, on_bound=bound.append))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        await envoy_runner(bootstrap.render_bootstrap(xds_host="127.0.0.1", xds_port=bound[0].xds))
        reviews, port = upstream_factory("reviews", pod_address), free_port()
        service = {
            "metadata": {"name": "reviews", "namespace": "default"},
            "spec": {"ports": [{"name": "http-web", "port": port, "targetPort": reviews.port}]},
        }
        endpoints = {
            "metadata": {"name": "reviews", "namespace": "default"},
            "subsets": [
                {
                    "addresses": [{"ip": pod_address}],
                    "ports": [{"name": "http-web", "port": reviews.port}],
                }
            ],
        }
        await asyncio.to_thread(api.create, "/api/v1/namespaces/default/services", service)
        await asyncio.to_thread(api.create, "/api/v1/namespaces/default/endpoints", endpoints)
        async with httpx.AsyncClient(trust_env=False, timeout=2) as client:

            async def routed() -> bool:
                response = await client.get(
                    f"http://127.0.0.1:{port}/", headers={"Host": f"reviews.default:{port}"}
                )
                return response.status_code == 200 and response.text.startswith("reviews")

            await _until(routed)

            async def mesh_side_has_port() -> bool:
                gs = await asyncio.to_thread(api.get, GS_SERVICE)
                ef = await asyncio.to_thread(api.get, GS_FILTER)
                names = {
                    p["match"]["routeConfiguration"]["name"]
                    for p in ef["spec"]["configPatches"]
                    if "routeConfiguration" in p["match"]
                }
                return port in [p["port"] for p in gs["spec"]["ports"]] and str(port) in names

            await _until(mesh_side_has_port, within=20)
            await asyncio.to_thread(api.delete, "/api/v1/namespaces/default/services/reviews")
            admin = f"http://127.0.0.1:{bound[0].admin}/xds"

            async def service_gone() -> bool:
                status = (await client.get(admin)).json()
                response = await client.get(
                    f"http://127.0.0.1:{port}/", headers={"Host": f"reviews.default:{port}"}
                )
                return response.status_code == 404 and f"127.0.0.1_{port}" in status["listeners"]

            await _until(service_gone)
            assert await mesh_side_has_port()
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        # The real server's reset between tests lists each API group at its preferred version
        # only (networking.istio.io: v1), which has no EnvoyFilter (v1alpha3 only): delete it
        # here, or the next test finds it.
        with contextlib.suppress(kube.KubeNotFound):
            api.delete(GS_FILTER)
