"""From Kubernetes objects to `MeshState`, and the batching of watch events.

Covers: Service conversion (ports, targetPort, appProtocol, non-TCP and ExternalName dropped);
Endpoints subsets (ready addresses only); EndpointSlices (ready condition, service-name label) win
over Endpoints when a Service has any; the watcher's stores follow ADDED/MODIFIED/DELETED; no
mesh is yielded before every kind is synced; a burst of events yields one mesh.
"""

from __future__ import annotations

import asyncio
import contextlib

from lazyload_global_pilot import watching
from lazyload_global_pilot.mesh import EndpointGroup, EndpointPort, ServicePort


def _service(name: str, ns: str = "default", **spec) -> dict:
    spec.setdefault("ports", [{"name": "http", "port": 9080, "targetPort": 9080}])
    return {"metadata": {"name": name, "namespace": ns}, "spec": spec}


def _endpoints(name: str, ns: str = "default", ips=("10.0.0.1",), port=9080) -> dict:
    return {
        "metadata": {"name": name, "namespace": ns},
        "subsets": [
            {
                "addresses": [{"ip": ip} for ip in ips],
                "notReadyAddresses": [{"ip": "10.9.9.9"}],
                "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
            }
        ],
    }


def _slice(service: str, ns: str = "default", ready=("10.1.0.1",), not_ready=(), port=9080):
    endpoints = [{"addresses": [ip], "conditions": {"ready": True}} for ip in ready]
    endpoints += [{"addresses": [ip], "conditions": {"ready": False}} for ip in not_ready]
    return {
        "metadata": {
            "name": f"{service}-abcde",
            "namespace": ns,
            "labels": {watching.SERVICE_NAME_LABEL: service},
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
    }


def test_service_conversion_keeps_tcp_ports_with_their_targets():
    raw = _service(
        "reviews",
        clusterIP="10.96.0.9",
        ports=[
            {"name": "http", "port": 9080, "targetPort": "web", "appProtocol": "http"},
            {"port": 53, "protocol": "UDP"},
            {"port": 81},
        ],
    )
    service = watching.service_from_raw(raw)
    assert service is not None
    assert service.cluster_ip == "10.96.0.9"
    assert service.ports == (
        ServicePort(name="http", port=9080, target_port="web", app_protocol="http"),
        ServicePort(name="", port=81),
    )


def test_external_name_services_are_skipped():
    assert watching.service_from_raw(_service("x", type="ExternalName", ports=[])) is None


def test_endpoints_give_ready_addresses_with_named_ports():
    (group,) = watching.groups_from_endpoints(_endpoints("details", ips=("10.0.0.2", "10.0.0.1")))
    assert group == EndpointGroup(
        addresses=("10.0.0.2", "10.0.0.1"), ports=(EndpointPort(name="http", port=9080),)
    )


def test_endpoint_slices_drop_endpoints_that_are_not_ready():
    group = watching.group_from_slice(
        _slice("details", ready=("10.1.0.1",), not_ready=("10.1.0.2",))
    )
    assert group.addresses == ("10.1.0.1",)


def test_slices_win_over_endpoints_and_endpoints_fill_in():
    mesh = watching.build_mesh(
        services=[_service("details"), _service("ratings"), _service("lonely")],
        endpoints=[_endpoints("details"), _endpoints("ratings", ips=("10.0.0.7",))],
        slices=[_slice("details", ready=("10.1.0.1",)), _slice("gone")],
    )
    by_name = {s.name: s for s in mesh.services}
    assert set(by_name) == {"details", "ratings", "lonely"}
    assert by_name["details"].endpoints[0].addresses == ("10.1.0.1",)
    assert by_name["ratings"].endpoints[0].addresses == ("10.0.0.7",)
    assert by_name["lonely"].endpoints == ()


def _watcher(kinds=("services", "endpoints"), debounce: float = 0.05) -> watching.MeshWatcher:
    return watching.MeshWatcher(
        api=None,  # type: ignore[arg-type]  # no API: the tests feed the stores through apply
        kinds=kinds,
        debounce=debounce,
    )


def test_watcher_stores_follow_events():
    watcher = _watcher()
    watcher.apply("services", "ADDED", _service("a"))
    watcher.apply("services", "MODIFIED", _service("a", clusterIP="10.96.0.1"))
    watcher.apply("services", "ADDED", _service("b"))
    watcher.apply("services", "DELETED", _service("b"))
    (service,) = watcher.mesh().services
    assert (service.name, service.cluster_ip) == ("a", "10.96.0.1")


async def _next(updates, timeout: float = 1.0):
    return await asyncio.wait_for(anext(updates), timeout)


async def test_no_mesh_until_every_kind_is_synced_then_one_per_burst():
    watcher = _watcher()
    updates = watcher.updates()
    pending = asyncio.ensure_future(_next(updates))
    try:
        watcher.apply("services", "ADDED", _service("a"))
        watcher.apply("services", "SYNCED", {})
        await asyncio.sleep(0.1)
        assert not pending.done()  # Endpoints not listed yet: a mesh now would drop them
        watcher.apply("endpoints", "SYNCED", {})
        first = await pending
        assert [s.name for s in first.services] == ["a"]
        for name in ("b", "c", "d"):
            watcher.apply("services", "ADDED", _service(name))
            await asyncio.sleep(0.005)
        second = await _next(updates)
        assert [s.name for s in second.services] == ["a", "b", "c", "d"]
        pending = asyncio.ensure_future(_next(updates))
        await asyncio.sleep(0.1)
        assert not pending.done()  # the burst rendered once
    finally:
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pending
        await updates.aclose()
