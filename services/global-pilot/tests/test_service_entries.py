"""ServiceEntry hosts: read from Istio's JSON, rendered, and routed by a real Envoy.

Covers: a ServiceEntry's hosts, non-UDP ports, resolution and endpoints are read (a
workloadSelector entry routes as NONE); a STATIC entry reaches its endpoints over EDS, a DNS entry
reaches its host resolved by Envoy (`localhost` here), a NONE entry goes to `Slime-Orig-Dest`
(and 404 without it); a Service keeps a host both define.
"""

from __future__ import annotations

import pytest
from lazyload_global_pilot import rendering, resources
from lazyload_global_pilot.mesh import (
    EndpointGroup,
    EndpointPort,
    MeshState,
    ServiceEntry,
    ServicePort,
)
from lazyload_global_pilot.snapshots import Snapshot
from lazyload_global_pilot.watching import build_mesh, service_entry_from_raw


def _raw(name: str, spec: dict) -> dict:
    return {"metadata": {"name": name, "namespace": "ext"}, "spec": spec}


def test_service_entry_from_raw():
    entry = service_entry_from_raw(
        _raw(
            "payments",
            {
                "hosts": ["pay.example.com"],
                "ports": [
                    {"number": 80, "name": "http", "protocol": "HTTP"},
                    {"number": 53, "name": "dns", "protocol": "UDP"},
                ],
                "resolution": "STATIC",
                "endpoints": [{"address": "10.0.0.1", "ports": {"http": 8080}}],
            },
        )
    )
    assert entry is not None
    assert entry.hosts == ("pay.example.com",)
    assert [(p.port, p.app_protocol) for p in entry.ports] == [(80, "http")]
    assert entry.resolution == "STATIC"
    assert entry.endpoints[0].ports[0].port == 8080
    selected = service_entry_from_raw(
        _raw(
            "vm",
            {
                "hosts": ["vm.local"],
                "ports": [{"number": 80}],
                "resolution": "STATIC",
                "workloadSelector": {"labels": {"app": "vm"}},
            },
        )
    )
    assert selected is not None and selected.resolution == "NONE"
    assert service_entry_from_raw(_raw("empty", {"hosts": [], "ports": []})) is None
    mesh = build_mesh([], [], [], [_raw("vm", {"hosts": ["a.b"], "ports": [{"number": 80}]})])
    assert [e.name for e in mesh.service_entries] == ["vm"]


def test_tcp_entries_and_repeated_hosts_render_no_route():
    entry = ServiceEntry(
        namespace="ext",
        name="db",
        hosts=("db.example.com",),
        ports=(ServicePort(name="tcp", port=5432, app_protocol="tcp"),),
        resolution="DNS",
    )
    rendered = rendering.render(
        MeshState.of([], [entry, entry.model_copy(update={"name": "db2"})]),
        rendering.RenderOptions(),
    )
    assert not any("db.example.com" in name for name in rendered[resources.CLUSTER])


@pytest.mark.envoy
async def test_entries_route_by_resolution(sidecar, upstream_factory):
    static, dns, none = (
        upstream_factory("static"),
        upstream_factory("dns"),
        upstream_factory("none"),
    )
    sidecar.reconfigure(passthrough_by_default=False)
    mesh = MeshState.of(
        [],
        [
            ServiceEntry(
                namespace="ext",
                name="static",
                hosts=("static.example.com",),
                ports=(ServicePort(name="http", port=80),),
                resolution="STATIC",
                endpoints=(
                    EndpointGroup(
                        addresses=("127.0.0.1",),
                        ports=(EndpointPort(name="http", port=static.port),),
                    ),
                ),
            ),
            ServiceEntry(
                namespace="ext",
                name="dns",
                hosts=("localhost",),
                ports=(ServicePort(name="http", port=dns.port),),
                resolution="DNS",
            ),
            ServiceEntry(
                namespace="ext",
                name="none",
                hosts=("*.none.example",),
                ports=(ServicePort(name="http", port=80),),
                resolution="NONE",
            ),
        ],
    )
    sidecar.xds.cache.set(Snapshot.of(rendering.render(mesh, sidecar.options)))
    assert (await sidecar.eventually("static.example.com")).text.startswith("static")
    assert (await sidecar.eventually(f"localhost:{dns.port}")).text.startswith("dns")
    orig = {"Slime-Orig-Dest": f"127.0.0.1:{none.port}"}
    assert (await sidecar.eventually("a.none.example", **orig)).text.startswith("none")
    assert (await sidecar.get("a.none.example")).status_code == 404
    assert (await sidecar.get("other.example", **orig)).status_code == 404
    assert sidecar.xds.ads.stats.nacks == 0
