"""Wormhole ports (`autoPort`, `cleanupWormholePort`), pure.

Covers: static HTTP and TCP ports without auto; with auto, every Service port is added, HTTP or
TCP by its protocol (appProtocol, else name prefix; unnamed = HTTP), a port any Service serves as
HTTP is HTTP, static TCP ports stay TCP; grow-only by default, shrinking with cleanup; the
global-sidecar's own Service is never counted.
"""

from __future__ import annotations

from lazyload_global_pilot.mesh import MeshState, Service, ServicePort
from lazyload_global_pilot.ports import PortSet, WormholePorts


def _svc(name: str, *ports: ServicePort, namespace: str = "default") -> Service:
    return Service(namespace=namespace, name=name, ports=ports)


MESH = MeshState.of(
    [
        _svc("web", ServicePort(name="http", port=9080), ServicePort(port=8000)),
        _svc("api", ServicePort(name="grpc-api", port=50051)),
        _svc("db", ServicePort(name="tcp-mysql", port=3306)),
        _svc("cache", ServicePort(name="x", port=6379, app_protocol="redis")),
        _svc("mixed", ServicePort(name="tcp", port=8000)),
        _svc("dns", ServicePort(name="dns", port=53, protocol="UDP")),
        _svc("global-sidecar", ServicePort(name="http", port=1234), namespace="mesh-operator"),
    ]
)


def test_static_ports_without_auto():
    ports = WormholePorts(http=(80,), tcp=(5432,))
    assert ports.update(MESH) == PortSet(http=(80,), tcp=(5432,))


def test_auto_adds_every_service_port_by_protocol():
    ports = WormholePorts(
        http=(80,), tcp=(9080,), auto=True, exclude=[("mesh-operator", "global-sidecar")]
    )
    result = ports.update(MESH)
    assert result.http == (80, 8000, 50051)
    assert result.tcp == (3306, 6379, 9080)
    assert result.all == (80, 3306, 6379, 8000, 9080, 50051)


def test_grow_only_unless_cleanup():
    small = MeshState.of([_svc("web", ServicePort(name="http", port=9080))])
    grow = WormholePorts(http=(), auto=True)
    assert grow.update(MESH).http
    assert 50051 in grow.update(small).http
    clean = WormholePorts(http=(80,), auto=True, cleanup=True)
    clean.update(MESH)
    assert clean.update(small) == PortSet(http=(80, 9080))
    assert clean.update(MeshState()) == PortSet(http=(80,))


def test_remembered_ports_join_the_grow_only_set():
    small = MeshState.of([_svc("web", ServicePort(name="http", port=9080))])
    replica = WormholePorts(http=(80,), auto=True)
    replica.remember(PortSet(http=(8081,), tcp=(3306,)))  # what another replica applied
    assert replica.update(small) == PortSet(http=(80, 8081, 9080), tcp=(3306,))
    clean = WormholePorts(http=(80,), auto=True, cleanup=True)
    clean.remember(PortSet(http=(8081,)))  # cleanup: only the ports of now count
    assert clean.update(small) == PortSet(http=(80, 9080))
