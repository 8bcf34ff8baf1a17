"""TCP steering: which Service addresses a fenced workload's unknown TCP connections are steered
to the global-sidecar from (pure, no I/O).

HTTP has a Host header and a route table that the `to-global-sidecar` catch-all can patch; a raw
TCP connection to an address the caller's sidecar does not know reaches Istio's `virtualOutbound`
listener and leaves through `PassthroughCluster`, unseen (Slime does not cover TCP at all). So for
every TCP Service port (an opaque protocol: `tcp`, `tls`, `mongo`, ...; see `ports.is_tcp`) the
EnvoyFilter adds a filter chain to `virtualOutbound` matching that port on the ClusterIPs that
serve it, whose `tcp_proxy` tunnels the connection to the global-sidecar as an HTTP POST (over the
mesh's mTLS leg, like any first call) with the dialled address as `:authority` and
`Slime-Orig-Dest`. The global-sidecar terminates the tunnel (`ConnectConfig.allow_post`) for those
addresses only - it is no open relay - forwards the bytes to the dialled address, and its access
log names the Service, so the dependency is learned and the next connection goes direct.

`steered(mesh, exclude)` lists the (Service, port, ClusterIP) both sides are rendered from.

`of(mesh, exclude)` gives that set: per TCP port, the ClusterIPs of the Services that have it
(headless Services and the global-sidecar's own Services never count), in a stable order.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator

from lazyload_common import hosts
from pydantic import BaseModel, ConfigDict

from lazyload_global_pilot.mesh import MeshState, Service, ServicePort
from lazyload_global_pilot.ports import is_tcp


class TcpTarget(BaseModel):
    """One TCP port and the Service addresses that serve it."""

    model_config = ConfigDict(frozen=True)
    port: int
    addresses: tuple[str, ...]


class TcpTunnels(BaseModel):
    """Every steered TCP port, sorted; empty: no TCP steering."""

    model_config = ConfigDict(frozen=True)
    targets: tuple[TcpTarget, ...] = ()


def cluster_ip(service: Service) -> str | None:
    """The Service's ClusterIP, or None when it has none to dial (headless, not yet assigned)."""
    ip = (service.cluster_ip or "").strip()
    if not ip or ip.lower() == "none" or not hosts.is_ip_literal(ip):
        return None
    return ip


def steered(
    mesh: MeshState, exclude: Iterable[tuple[str, str]] = ()
) -> Iterator[tuple[Service, ServicePort, str]]:
    """Every steered (Service, TCP port, ClusterIP) of `mesh`, `exclude`d Services left out:
    what the callers' filter chains send and the global-sidecar accepts, by the same rule."""
    skipped = frozenset(exclude)
    for service in mesh.services:
        ip = cluster_ip(service)
        if ip is None or (service.namespace, service.name) in skipped:
            continue
        for port in service.ports:
            if port.protocol.upper() == "TCP" and is_tcp(port):
                yield service, port, ip


def of(mesh: MeshState, exclude: Iterable[tuple[str, str]] = ()) -> TcpTunnels:
    """The TCP ports of `mesh`'s Services and their ClusterIPs, `exclude`d Services left out."""
    by_port: dict[int, set[str]] = defaultdict(set)
    for _, port, ip in steered(mesh, exclude):
        by_port[port.port].add(ip)
    return TcpTunnels(
        targets=tuple(
            TcpTarget(port=port, addresses=tuple(sorted(addresses)))
            for port, addresses in sorted(by_port.items())
        )
    )
