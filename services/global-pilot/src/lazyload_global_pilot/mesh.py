"""The mesh as global-pilot sees it: Services, their ports and their ready endpoints, and the
hosts of Istio ServiceEntries.

This is the input of `rendering.render`. It is plain immutable data: the kube adapter
(`watching`) builds it from Services, Endpoints and EndpointSlices, tests build it by hand.
Nothing here knows Kubernetes JSON or Envoy protobufs.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ServicePort(_Frozen):
    """One port of a Service (`spec.ports[]`)."""

    name: str = ""
    port: int = Field(ge=1, le=65535)
    protocol: str = "TCP"
    target_port: int | str | None = None
    """`targetPort`: a number, a container port name, or None (= `port`)."""
    app_protocol: str | None = None


class EndpointPort(_Frozen):
    """One port of an endpoint group; Kubernetes names it after the Service port it serves."""

    name: str = ""
    port: int = Field(ge=1, le=65535)
    protocol: str = "TCP"


class EndpointGroup(_Frozen):
    """Ready addresses that listen on the same ports (an Endpoints subset or an EndpointSlice)."""

    addresses: tuple[str, ...] = ()
    ports: tuple[EndpointPort, ...] = ()


class Service(_Frozen):
    """A Service with the endpoints that currently back it."""

    namespace: str
    name: str
    ports: tuple[ServicePort, ...] = ()
    cluster_ip: str | None = None
    endpoints: tuple[EndpointGroup, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class ServiceEntry(_Frozen):
    """An Istio ServiceEntry: hosts outside the Services, reached as its `resolution` says.

    STATIC: the `endpoints` (EDS); DNS / DNS_ROUND_ROBIN: the endpoints' addresses, or each host,
    resolved by Envoy; NONE: the caller's original destination (`Slime-Orig-Dest`)."""

    namespace: str
    name: str
    hosts: tuple[str, ...] = ()
    ports: tuple[ServicePort, ...] = ()
    resolution: str = "NONE"
    endpoints: tuple[EndpointGroup, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class MeshState(_Frozen):
    """Every Service (and ServiceEntry) of the mesh, in a stable order (namespace, name)."""

    services: tuple[Service, ...] = ()
    service_entries: tuple[ServiceEntry, ...] = ()

    @classmethod
    def of(
        cls,
        services: list[Service] | tuple[Service, ...],
        service_entries: list[ServiceEntry] | tuple[ServiceEntry, ...] = (),
    ) -> MeshState:
        return cls(
            services=tuple(sorted(services, key=lambda s: (s.namespace, s.name))),
            service_entries=tuple(sorted(service_entries, key=lambda s: (s.namespace, s.name))),
        )


def resolve_target_port(port: ServicePort, group: EndpointGroup) -> int | None:
    """The port the endpoints of `group` serve `port` on, or None when they do not serve it.

    Kubernetes names endpoint ports after the Service port, so the name decides when the group
    lists ports; a numeric `targetPort` (or the port itself) is the fallback for hand-made groups.
    """
    if group.ports:
        for candidate in group.ports:
            if candidate.name == port.name:
                return candidate.port
        return None
    if isinstance(port.target_port, int):
        return port.target_port
    if port.target_port is None:
        return port.port
    return None
