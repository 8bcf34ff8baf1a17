"""Wormhole ports: the ports the global-sidecar listens on, and which of them speak HTTP or TCP.

Slime's `wormholePort` is a static list; with `autoPort` it grows from the Services of the mesh.
`WormholePorts` is that state, kept by the publish loop across renders: `update(mesh)` returns the
current `PortSet` - the static ports plus every port any Service has had since start (grow-only),
or only the ports Services have now when `cleanup` (Slime's `cleanupWormholePort`).

A Service port counts as TCP when its protocol (`appProtocol`, else the name prefix before `-`)
is an opaque one (`tcp`, `tls`, `https`, `mongo`, `mysql`, `redis`); every other port - HTTP,
HTTP/2, gRPC and unnamed ones, which Istio sniffs - counts as HTTP. A port some Service serves
as HTTP is an HTTP port. The global-sidecar's own Services are never counted (no loop).
Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict

from lazyload_global_pilot.mesh import MeshState, ServicePort

TCP_PROTOCOLS = frozenset({"tcp", "tls", "https", "mongo", "mysql", "redis"})


class PortSet(BaseModel):
    """The wormhole ports of one render: HTTP listeners and TCP listeners (disjoint, sorted)."""

    model_config = ConfigDict(frozen=True)
    http: tuple[int, ...] = ()
    tcp: tuple[int, ...] = ()

    @property
    def all(self) -> tuple[int, ...]:
        return tuple(sorted({*self.http, *self.tcp}))


def protocol_of(port: ServicePort) -> str:
    """`appProtocol`, else the port name's prefix, lower case ("" when unnamed)."""
    if port.app_protocol:
        return port.app_protocol.lower()
    return port.name.lower().split("-", 1)[0]


def is_tcp(port: ServicePort) -> bool:
    return protocol_of(port) in TCP_PROTOCOLS


class WormholePorts:
    """Static ports plus, with `auto`, the ports of the mesh's Services (grow-only unless `cleanup`).

    `exclude` holds `(namespace, name)` of Services never counted (the global-sidecar's own).
    """

    def __init__(
        self,
        *,
        http: Iterable[int] = (80,),
        tcp: Iterable[int] = (),
        auto: bool = False,
        cleanup: bool = False,
        exclude: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.static_tcp = frozenset(tcp)
        self.static_http = frozenset(http) - self.static_tcp
        self.auto, self.cleanup = auto, cleanup
        self.exclude = frozenset(exclude)
        self._seen_http: set[int] = set()
        self._seen_tcp: set[int] = set()

    def remember(self, ports: PortSet) -> None:
        """Count `ports` as seen (grow-only mode): the ports the global-sidecar Service already
        has, which another replica (or this one before a restart) applied. So every replica's
        set is the union of what any of them saw, and two replicas never undo each other's
        ports. Nothing to do with static ports or `cleanup` (only the ports of now count)."""
        if self.auto and not self.cleanup:
            self._seen_http |= set(ports.http)
            self._seen_tcp |= set(ports.tcp)

    def update(self, mesh: MeshState) -> PortSet:
        """The ports to listen on once `mesh` is known."""
        if self.auto:
            http, tcp = self._from_mesh(mesh)
            if self.cleanup:
                self._seen_http, self._seen_tcp = http, tcp
            else:
                self._seen_http |= http
                self._seen_tcp |= tcp
        tcp_ports = self.static_tcp | (self._seen_tcp - self._seen_http - self.static_http)
        http_ports = (self.static_http | self._seen_http) - self.static_tcp
        return PortSet(http=tuple(sorted(http_ports)), tcp=tuple(sorted(tcp_ports)))

    def _from_mesh(self, mesh: MeshState) -> tuple[set[int], set[int]]:
        http: set[int] = set()
        tcp: set[int] = set()
        for service in mesh.services:
            if (service.namespace, service.name) in self.exclude:
                continue
            for port in service.ports:
                if port.protocol.upper() == "TCP":
                    (tcp if is_tcp(port) else http).add(port.port)
        return http, tcp
