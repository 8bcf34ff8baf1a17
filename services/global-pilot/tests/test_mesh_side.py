"""The mesh-side resources: rendering per mode, Istio schema validation, applying to the API.

Covers: cluster mode renders one global-sidecar Service (a port per wormhole port) in the mesh
namespace and `to-global-sidecar` in the root namespace, whose patches per HTTP port remove
`allow_any`, add the dispatches and `allow_all` to the global-sidecar with `Slime-Orig-Dest` and
`Slime-Source-Ns` (the proxy's namespace), and undo all that for the global-sidecar's own proxy;
namespace mode renders them per namespace with the namespace as `Slime-Source-Ns`; disabled mode
renders nothing; every rendered EnvoyFilter passes Istio's schema, and an invalid one or one with
a field Istio does not know is refused before anything is written; the applier creates, leaves
unchanged objects alone, updates, and prunes on a mode change, all through the official client on
the API server of the run (`kube_cluster`); a failed apply is retried (a fault the emulator
injects).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from lazyload_common import kube
from lazyload_global_pilot import applying, meshside, syncing
from lazyload_global_pilot.dispatches import Dispatch
from lazyload_global_pilot.errors import InvalidResourceError
from lazyload_global_pilot.ports import PortSet
from lazyload_testing import waiting
from lazyload_testing.kube import KubeEmulator, faster_than
from lazyload_testing.kube_real import RealKube

PORTS = PortSet(http=(80, 9080), tcp=(3306,))
DISPATCHES = (
    Dispatch(
        name="egress",
        domains=("*.corp.example",),
        cluster="outbound|80||egress.gw.svc.cluster.local",
    ),
    Dispatch(name="bare", domainRegex=r"^[^.]+$", cluster="_PASSTHROUGH"),
)
CLUSTER = meshside.MeshSideOptions(dispatches=DISPATCHES)
NAMESPACED = meshside.MeshSideOptions(mode="namespace", namespaces=("shop", "pay"))
EF_PATH = "/apis/networking.istio.io/v1alpha3/namespaces/{}/envoyfilters/to-global-sidecar"
SVC_PATH = "/api/v1/namespaces/{}/services/global-sidecar"
DR_PATH = "/apis/networking.istio.io/v1alpha3/namespaces/{}/destinationrules/global-sidecar"


def _by_kind(objects):
    return {(o["kind"], o["metadata"]["namespace"]): o for o in objects}


def _patches(envoy_filter, port: int, *, own: bool = False):
    return [
        p
        for p in envoy_filter["spec"]["configPatches"]
        if p["match"]["routeConfiguration"]["name"] == str(port) and ("proxy" in p["match"]) == own
    ]


def test_cluster_mode_service_and_filter():
    objects = _by_kind(meshside.render(PORTS, CLUSTER))
    assert set(objects) == {
        ("Service", "mesh-operator"),
        ("DestinationRule", "mesh-operator"),
        ("EnvoyFilter", "istio-system"),
    }
    rule = objects[("DestinationRule", "mesh-operator")]
    assert rule["spec"] == {
        "host": "global-sidecar.mesh-operator.svc.cluster.local",
        "trafficPolicy": {"connectionPool": {"http": {"useClientProtocol": True}}},
    }
    service = objects[("Service", "mesh-operator")]
    assert service["metadata"]["name"] == "global-sidecar"
    assert service["spec"]["selector"] == {"app": "global-sidecar"}
    assert [(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
        ("http-80", 80, 80),
        ("tcp-3306", 3306, 3306),
        ("http-9080", 9080, 9080),
    ]
    envoy_filter = objects[("EnvoyFilter", "istio-system")]
    assert envoy_filter["metadata"]["name"] == "to-global-sidecar"
    assert not _patches(envoy_filter, 3306)  # TCP ports have no route configuration
    remove, merge = _patches(envoy_filter, 9080)
    assert remove["applyTo"] == "VIRTUAL_HOST"
    assert remove["match"]["context"] == "SIDECAR_OUTBOUND"
    assert remove["match"]["routeConfiguration"]["vhost"] == {"name": "allow_any"}
    assert remove["patch"] == {"operation": "REMOVE"}
    assert merge["applyTo"] == "ROUTE_CONFIGURATION"
    assert merge["patch"]["operation"] == "MERGE"
    egress, allow_all = merge["patch"]["value"]["virtual_hosts"]
    assert egress["domains"] == ["*.corp.example"]
    assert egress["routes"][0]["route"]["cluster"] == "outbound|80||egress.gw.svc.cluster.local"
    assert allow_all["name"] == "allow_all" and allow_all["domains"] == ["*"]
    bare, to_gs = allow_all["routes"]
    assert bare["match"]["headers"][0]["string_match"]["safe_regex"]["regex"] == r"^[^.]+$"
    assert bare["route"]["cluster"] == "PassthroughCluster"
    assert to_gs["route"] == {
        "cluster": "outbound|9080||global-sidecar.mesh-operator.svc.cluster.local",
        "timeout": "0s",
    }
    headers = {h["header"]["key"]: h["header"]["value"] for h in to_gs["request_headers_to_add"]}
    assert headers == {
        "Slime-Orig-Dest": "%DOWNSTREAM_LOCAL_ADDRESS%",
        "Slime-Source-Ns": "%ENVIRONMENT(POD_NAMESPACE)%",
        "Lazyload-Source-Ip": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
    }
    # the global-sidecar's own proxy: the added virtual hosts go again, `*` passes through
    own = _patches(envoy_filter, 9080, own=True)
    assert {p["match"]["proxy"]["metadata"]["SLIME_APP"] for p in own} == {
        "LAZYLOAD_GLOBAL_SIDECAR"
    }
    removed = {p["match"]["routeConfiguration"]["vhost"]["name"] for p in own[:-1]}
    assert removed == {"allow_all", "egress"}
    passthrough = own[-1]["patch"]["value"]["virtual_hosts"][0]
    assert passthrough["routes"][0]["route"]["cluster"] == "PassthroughCluster"
    for obj in objects.values():
        meshside.validate(obj)


def test_namespace_mode_one_pair_per_namespace():
    objects = _by_kind(meshside.render(PORTS, NAMESPACED))
    assert set(objects) == {
        ("Service", "shop"),
        ("Service", "pay"),
        ("DestinationRule", "shop"),
        ("DestinationRule", "pay"),
        ("EnvoyFilter", "shop"),
        ("EnvoyFilter", "pay"),
    }
    _, merge = _patches(objects[("EnvoyFilter", "pay")], 80)
    (allow_all,) = merge["patch"]["value"]["virtual_hosts"]
    (route,) = allow_all["routes"]
    assert route["route"]["cluster"] == "outbound|80||global-sidecar.pay.svc.cluster.local"
    headers = {h["header"]["key"]: h["header"]["value"] for h in route["request_headers_to_add"]}
    assert headers["Slime-Source-Ns"] == "pay"
    for obj in objects.values():
        meshside.validate(obj)


def test_disabled_mode_renders_nothing():
    assert meshside.render(PORTS, meshside.MeshSideOptions(mode="disabled")) == []


def test_validation_refuses_bad_and_unknown_fields():
    (envoy_filter,) = [o for o in meshside.render(PORTS, CLUSTER) if o["kind"] == "EnvoyFilter"]
    bad = {**envoy_filter, "spec": {"configPatches": [{"applyTo": "VHOST"}]}}
    with pytest.raises(InvalidResourceError):
        meshside.validate(bad)
    unknown = {**envoy_filter, "spec": {**envoy_filter["spec"], "priorty": 1}}
    with pytest.raises(InvalidResourceError, match="unknown"):
        meshside.validate(unknown)


def _mesh_side_writes(server: RealKube | KubeEmulator) -> list[Any]:
    """Writes to Services and EnvoyFilters (on a real server, controllers write other kinds)."""
    return [w for w in server.writes() if "/services" in w.path or "/envoyfilters" in w.path]


def _namespaces(api: kube.KubeApi, *names: str) -> None:
    for name in names:
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        with contextlib.suppress(kube.KubeConflict):
            api.create("/api/v1/namespaces", body)


async def test_applier_per_mode_on_the_api_server(kube_cluster: RealKube | KubeEmulator):
    api = kube.KubeApi(kube_cluster.api_client())
    _namespaces(api, "istio-system", "mesh-operator", "shop", "pay")
    applier = applying.MeshSideApplier(api)

    result = applier.apply(meshside.render(PORTS, CLUSTER))
    assert sorted(result.created) == [
        "DestinationRule/mesh-operator/global-sidecar",
        "EnvoyFilter/istio-system/to-global-sidecar",
        "Service/mesh-operator/global-sidecar",
    ]
    stored = api.get(EF_PATH.format("istio-system"))
    assert stored["spec"] == meshside.render(PORTS, CLUSTER)[-1]["spec"]
    rule = api.get(DR_PATH.format("mesh-operator"))
    assert rule["spec"]["trafficPolicy"]["connectionPool"]["http"]["useClientProtocol"] is True
    service = api.get(SVC_PATH.format("mesh-operator"))
    assert [p["port"] for p in service["spec"]["ports"]] == [80, 3306, 9080]

    kube_cluster.clear_requests()
    again = applier.apply(meshside.render(PORTS, CLUSTER))
    assert len(again.unchanged) == 3 and not _mesh_side_writes(kube_cluster)

    grown = PortSet(http=(80, 8080, 9080), tcp=(3306,))
    updated = applier.apply(meshside.render(grown, CLUSTER))
    assert len(updated.updated) == 2
    service = api.get(SVC_PATH.format("mesh-operator"))
    assert [p["port"] for p in service["spec"]["ports"]] == [80, 3306, 8080, 9080]
    assert _patches(api.get(EF_PATH.format("istio-system")), 8080)

    switched = applier.apply(meshside.render(grown, NAMESPACED))
    assert sorted(switched.deleted) == [
        "DestinationRule/mesh-operator/global-sidecar",
        "EnvoyFilter/istio-system/to-global-sidecar",
        "Service/mesh-operator/global-sidecar",
    ]
    assert len(switched.created) == 6
    with pytest.raises(kube.KubeNotFound):
        api.get(EF_PATH.format("istio-system"))
    assert api.get(EF_PATH.format("shop"))["metadata"]["namespace"] == "shop"
    assert api.get(SVC_PATH.format("pay"))["metadata"]["labels"]["app"] == "global-sidecar"

    disabled = applier.apply(meshside.render(grown, meshside.MeshSideOptions(mode="disabled")))
    assert len(disabled.deleted) == 6
    with pytest.raises(kube.KubeNotFound):
        api.get(SVC_PATH.format("shop"))


async def test_invalid_objects_are_never_written(kube_cluster: RealKube | KubeEmulator):
    applier = applying.MeshSideApplier(kube.KubeApi(kube_cluster.api_client()))
    objects = meshside.render(PORTS, CLUSTER)
    objects[-1]["spec"]["configPatches"][0]["applyTo"] = "NOT_A_TYPE"
    kube_cluster.clear_requests()
    with pytest.raises(InvalidResourceError):
        applier.apply(objects)
    assert not _mesh_side_writes(kube_cluster)


async def _applied_despite(kube_emulator: KubeEmulator, **fault: Any) -> kube.KubeApi:
    """Apply PORTS in cluster mode through the MeshSide loop while the first POST of a Service
    fails as `fault` says (`inject_fault`); returns once the loop applied them."""
    api = kube.KubeApi(kube_emulator.api_client())
    _namespaces(api, "mesh-operator")
    kube_emulator.inject_fault("POST", r".*/services$", count=1, **fault)
    side = syncing.MeshSide(applying.MeshSideApplier(api), CLUSTER)
    side.retry_delay = 0.05
    task = asyncio.ensure_future(side.run())
    try:
        side.offer(PORTS)
        async with asyncio.timeout(15):
            while side.applied != PORTS:
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return api


# It injects a fault: the emulator only.
async def test_a_failed_apply_is_retried(kube_emulator: KubeEmulator):
    api = await _applied_despite(kube_emulator, status=500)
    assert api.get(SVC_PATH.format("mesh-operator"))["spec"]["ports"]
    posts = [r for r in kube_emulator.writes("/services") if r.verb == "POST"]
    assert [r.status for r in posts] == [500, 201]


async def test_a_throttled_apply_waits_the_servers_retry_after(kube_emulator: KubeEmulator):
    """A 429 with Retry-After: the next apply waits that long, not the loop's own back-off."""
    await _applied_despite(kube_emulator, status=429, retry_after=1)
    posts = [r for r in kube_emulator.writes("/services") if r.verb == "POST"]
    assert [r.status for r in posts] == [429, 201]
    assert posts[1].time - posts[0].time >= 0.95


def test_uninstall_removes_what_the_mesh_side_apply_made(kube_cluster: RealKube | KubeEmulator):
    """`lazyload-global-pilot uninstall` (the chart's pre-delete hook): the catch-all filter and
    the Services global-pilot created go; a global-sidecar Service the chart made stays."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    api = kube.KubeApi(kube_cluster.api_client())
    _namespaces(api, "istio-system", "mesh-operator", "shop")
    chart_service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "global-sidecar", "namespace": "mesh-operator"},
        "spec": {"selector": {"app": "global-sidecar"}, "ports": [{"port": 80}]},
    }
    api.create("/api/v1/namespaces/mesh-operator/services", chart_service)
    applier = applying.MeshSideApplier(api)
    applier.apply(meshside.render(PORTS, CLUSTER))
    shop = meshside.MeshSideOptions(mode="namespace", namespaces=("shop",))
    applier.apply([*meshside.render(PORTS, CLUSTER), *meshside.render(PORTS, shop)])

    script = Path(sys.executable).parent / "lazyload-global-pilot"
    env = {**os.environ, "LAZYLOAD_KUBE__KUBECONFIG": str(kube_cluster.kubeconfig)}
    done = subprocess.run(
        [str(script), "uninstall"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    # the filters of both namespaces, shop's Service and both DestinationRules
    assert "removed 5 mesh-side objects" in done.stdout, done.stdout
    for namespace in ("istio-system", "shop"):
        with pytest.raises(kube.KubeNotFound):
            api.get(EF_PATH.format(namespace))
    with pytest.raises(kube.KubeNotFound):
        api.get(SVC_PATH.format("shop"))
    assert api.get(SVC_PATH.format("mesh-operator"))["spec"]["ports"]  # the chart's: kept
    again = subprocess.run(
        [str(script), "uninstall"], env=env, capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 0 and "removed 0 mesh-side objects" in again.stdout


def test_revision_label_and_passthrough_by_default():
    options = meshside.MeshSideOptions(revision="canary", passthrough_by_default=True)
    service, rule, envoy_filter = meshside.render(PORTS, options)
    assert "istio.io/rev" not in rule["metadata"]["labels"]
    assert envoy_filter["metadata"]["labels"]["istio.io/rev"] == "canary"
    assert "istio.io/rev" not in service["metadata"]["labels"]
    meshside.validate(envoy_filter)
    # Slime's passthroughByDefault: the last `*` route leaves for the original destination.
    merge = next(p for p in _patches(envoy_filter, 80) if p["patch"]["operation"] == "MERGE")
    allow_all = merge["patch"]["value"]["virtual_hosts"][-1]
    assert allow_all["name"] == "allow_all"
    assert allow_all["routes"][-1]["route"]["cluster"] == "PassthroughCluster"
    assert "request_headers_to_add" not in allow_all["routes"][-1]
    default = meshside.render(PORTS, meshside.MeshSideOptions())[-1]
    merge = next(p for p in _patches(default, 80) if p["patch"]["operation"] == "MERGE")
    last = merge["patch"]["value"]["virtual_hosts"][-1]["routes"][-1]
    assert last["route"]["cluster"] == "outbound|80||global-sidecar.mesh-operator.svc.cluster.local"
    assert "istio.io/rev" not in default["metadata"]["labels"]


async def test_a_second_replica_starts_from_the_applied_ports(
    kube_cluster: RealKube | KubeEmulator,
):
    """Two replicas (or one restarted) never undo each other's grow-only ports: a replica starts
    from the ports the global-sidecar Service already has."""
    from lazyload_global_pilot.mesh import MeshState, Service, ServicePort
    from lazyload_global_pilot.ports import WormholePorts

    api = kube.KubeApi(kube_cluster.api_client())
    _namespaces(api, "istio-system", "mesh-operator")
    first = applying.MeshSideApplier(api)
    first.apply(meshside.render(PORTS, CLUSTER))  # http 80, 9080; tcp 3306
    second = WormholePorts(http=(80,), auto=True)
    second.remember(first.applied_ports(CLUSTER))
    now = MeshState.of([Service(namespace="shop", name="a", ports=(ServicePort(port=7070),))])
    ports = second.update(now)
    assert ports == PortSet(http=(80, 7070, 9080), tcp=(3306,))
    applying.MeshSideApplier(api).apply(meshside.render(ports, CLUSTER))
    service = api.get(SVC_PATH.format("mesh-operator"))
    assert [p["port"] for p in service["spec"]["ports"]] == [80, 3306, 7070, 9080]


async def test_every_api_request_keeps_to_the_client_rate_limit(
    kube_emulator: KubeEmulator, free_port: Any
) -> None:
    """LAZYLOAD_KUBE__QPS/BURST bound every request of global-pilot: its lists and watches and
    the mesh-side apply's reads, writes and prune lists (#18)."""
    from lazyload_global_pilot import app
    from lazyload_global_pilot.settings import GlobalPilotSettings

    qps, burst = 10.0, 2
    _namespaces(kube.KubeApi(kube_emulator.api_client()), "istio-system", "mesh-operator")
    settings = GlobalPilotSettings.model_validate(
        {
            "kube": {"kubeconfig": kube_emulator.kubeconfig, "qps": qps, "burst": burst},
            "admin": {"host": "127.0.0.1", "port": 0},
            "xds": {"host": "127.0.0.1", "port": 0},
            "listener": {"address": "127.0.0.1", "ports": [free_port()]},
            "global_sidecar": {"apply": True},
            "als": {"enabled": False},
            "watch": {"debounce": 0.05},
        }
    )
    kube_emulator.clear_requests()
    await waiting.serve_until(app.run, settings, lambda: kube_emulator.writes("/envoyfilters"))
    requests = kube_emulator.requests()
    assert len(requests) >= 12
    assert not faster_than([r.time for r in requests], qps, burst)
