"""Settings of global-pilot: the shared groups plus `xds`, `listener`, `routing`,
`global_sidecar`, `als` and `watch`.

Environment variables follow the contract (`LAZYLOAD_` prefix, `__` nesting), for example
`LAZYLOAD_XDS__PORT=0`, `LAZYLOAD_LISTENER__PORTS=80,8080`, `LAZYLOAD_LISTENER__AUTO_PORT=true`,
`LAZYLOAD_ROUTING__DISPATCHES='[...]'`, `LAZYLOAD_GLOBAL_SIDECAR__MODE=namespace`,
`LAZYLOAD_ALS__HOST=127.0.0.1`, `LAZYLOAD_WATCH__DEBOUNCE=0.1`. `check()` runs the cross-field
checks before anything connects.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from lazyload_common import errors, hosts
from lazyload_common import settings as common
from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import NoDecode

from lazyload_global_pilot import meshside, ports, rendering
from lazyload_global_pilot.dispatches import Dispatch


def _port_list(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(
            int(p) for p in value.replace("[", "").replace("]", "").split(",") if p.strip()
        )
    if isinstance(value, int):
        return (value,)
    return value


def _name_list(value: Any) -> Any:
    if isinstance(value, str):
        if value.strip().startswith("["):
            import json

            return tuple(json.loads(value))
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return value


class XdsSettings(BaseModel):
    """The ADS gRPC server the global-sidecar Envoys connect to."""

    host: str = Field(default="0.0.0.0", description="Address the xDS server binds.")
    port: int = Field(default=18000, ge=0, le=65535, description="xDS port; 0 picks a free port.")


class ListenerSettings(BaseModel):
    """The global-sidecar's listeners: the wormhole ports fenced sidecars send calls to."""

    address: str = Field(
        default="0.0.0.0", description="Address the global-sidecar's listeners bind."
    )
    ports: Annotated[tuple[int, ...], NoDecode] = Field(
        default=(80,),
        description="Static HTTP wormhole ports, comma-separated or a JSON list; Slime's 80.",
    )
    tcp_ports: Annotated[tuple[int, ...], NoDecode] = Field(
        default=(), description="Static TCP wormhole ports (forwarded to the original destination)."
    )
    auto_port: bool = Field(
        default=False,
        description="Slime's autoPort: add every Service port of the mesh as a wormhole.",
    )
    cleanup_wormhole_port: bool = Field(
        default=False,
        description="With auto_port, drop ports no Service has any more (else grow-only).",
    )

    @field_validator("ports", "tcp_ports", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return _port_list(value)


class RoutingSettings(BaseModel):
    """Where hosts the mesh does not know go (Slime's `dispatches`, `passthroughByDefault`)."""

    passthrough_by_default: bool = Field(
        default=True,
        description="Unknown hosts go to their original destination (Slime-Orig-Dest); "
        "false: 404 NR.",
    )
    dispatches: tuple[Dispatch, ...] = Field(
        default=(),
        description="Domain or regex -> cluster, _PASSTHROUGH or _GLOBAL_SIDECAR (JSON list).",
    )
    upstream: Literal["endpoints", "original_destination"] = Field(
        default="endpoints",
        description="endpoints: the global-sidecar routes each Host to its Service's endpoints "
        "itself (a global-sidecar without an istio-proxy: the demo, compose); "
        "original_destination: every call goes to the address the caller dialled "
        "(Slime-Orig-Dest), where the global-sidecar pod's own istio-proxy takes it and applies "
        "the mesh's policy: VirtualServices, DestinationRules, mTLS (the chart's default).",
    )


class GlobalSidecarSettings(BaseModel):
    """The mesh-side resources: the global-sidecar Service and the `to-global-sidecar` filter."""

    mode: Literal["cluster", "namespace", "disabled"] = Field(
        default="cluster",
        description="cluster: one global-sidecar in mesh.global_sidecar_namespace, filter in the "
        "root namespace; namespace: one per namespace of `namespaces`; disabled: none.",
    )
    apply: bool = Field(
        default=True,
        description="Apply (and prune) the mesh-side resources through the Kubernetes API.",
    )
    namespaces: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Fenced namespaces that get their own global-sidecar (namespace mode).",
    )
    service_name: str = Field(
        default="global-sidecar", description="Name of the global-sidecar Service."
    )
    passthrough_by_default: bool = Field(
        default=False,
        description="Slime's passthroughByDefault: a fenced sidecar sends hosts it does not know "
        "(and no dispatch matches) straight to their original destination (PassthroughCluster) "
        "instead of to the global-sidecar, so they are never learned; for meshes whose unknown "
        "traffic is mostly external.",
    )
    revision: str = Field(
        default="",
        description="Istio revision: when set, the EnvoyFilters carry the label istio.io/rev "
        "(Slime's selfResourceRev), so only that revision's istiod applies them.",
    )
    app_label: str = Field(
        default="global-sidecar", description="`app` label the global-sidecar Service selects."
    )
    tcp_steering: bool = Field(
        default=True,
        description="A fenced workload's TCP connection to a Service ClusterIP:port it does not "
        "know (a TCP port: tcp, tls, mongo, ...) is tunnelled to the global-sidecar (HTTP POST "
        "over its first HTTP wormhole port), which forwards it and learns the dependency; "
        "false: Istio's PassthroughCluster takes it, unlearned (Slime covers HTTP only). Off "
        "with passthrough_by_default.",
    )

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return _name_list(value)


class AlsSettings(BaseModel):
    """Where the global-sidecar streams its access logs (accesslog-ingest's ALS listener)."""

    enabled: bool = Field(default=True, description="Render the ALS access logger and its cluster.")
    host: str = Field(default="127.0.0.1", description="Host (IP or DNS name) of accesslog-ingest.")
    port: int = Field(
        default=8082, ge=1, le=65535, description="ALS port of accesslog-ingest (Slime's 8082)."
    )
    tls_ca_file: str = Field(
        default="",
        description="PEM CA bundle (a path in the global-sidecar, read by its Envoy) that "
        "accesslog-ingest's certificate must chain to: set = the ALS cluster uses TLS.",
    )
    tls_cert_file: str = Field(
        default="",
        description="The global-sidecar's client certificate for the ALS port's mutual TLS "
        "(a path in the global-sidecar).",
    )
    tls_key_file: str = Field(default="", description="PEM private key of `tls_cert_file`.")
    tls_server_name: str = Field(
        default="",
        description="SNI of the ALS connection and the DNS name accesslog-ingest's certificate "
        "must carry; empty = the chain is checked, not the name.",
    )

    @model_validator(mode="after")
    def _tls_consistent(self) -> AlsSettings:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_cert_file and tls_key_file: set both or neither")
        if (self.tls_cert_file or self.tls_server_name) and not self.tls_ca_file:
            raise ValueError("tls_cert_file/tls_server_name: need tls_ca_file (TLS)")
        return self

    def target(self) -> rendering.AlsTarget:
        tls = (
            rendering.AlsTls(
                ca_file=self.tls_ca_file,
                cert_file=self.tls_cert_file,
                key_file=self.tls_key_file,
                server_name=self.tls_server_name,
            )
            if self.tls_ca_file
            else None
        )
        return rendering.AlsTarget(host=self.host, port=self.port, tls=tls)


class WatchSettings(BaseModel):
    """How the mesh is watched and how often it is rendered."""

    debounce: float = Field(
        default=0.1, ge=0, description="Seconds a batch of changes is gathered before one render."
    )
    endpoints: bool = Field(default=True, description="Watch core/v1 Endpoints.")
    endpoint_slices: bool = Field(
        default=True,
        description="Watch discovery.k8s.io/v1 EndpointSlices (preferred when present).",
    )
    service_entries: bool = Field(
        default=True,
        description="Watch Istio ServiceEntries (networking.istio.io/v1) for their hosts.",
    )


class GlobalPilotSettings(common.ServiceSettings):
    """Everything global-pilot reads from the environment."""

    xds: XdsSettings = Field(default_factory=XdsSettings)
    listener: ListenerSettings = Field(default_factory=ListenerSettings)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    global_sidecar: GlobalSidecarSettings = Field(default_factory=GlobalSidecarSettings)
    als: AlsSettings = Field(default_factory=AlsSettings)
    watch: WatchSettings = Field(default_factory=WatchSettings)

    def check(self) -> None:
        """Raise `ConfigError` naming every setting that cannot work."""
        problems: list[str] = []
        if not hosts.is_valid_host(self.mesh.cluster_domain):
            problems.append(f"mesh.cluster_domain: not a DNS name: {self.mesh.cluster_domain!r}")
        listener = self.listener
        if not (listener.ports or listener.tcp_ports or listener.auto_port):
            problems.append("listener.ports: at least one port is needed (or auto_port)")
        for field, values in (("ports", listener.ports), ("tcp_ports", listener.tcp_ports)):
            if any(not 0 < p < 65536 for p in values):
                problems.append(f"listener.{field}: out of range: {values}")
            if len(set(values)) != len(values):
                problems.append(f"listener.{field}: repeated: {values}")
        if both := set(listener.ports) & set(listener.tcp_ports):
            problems.append(f"listener.tcp_ports: also HTTP ports: {sorted(both)}")
        names = [d.name for d in self.routing.dispatches]
        if len(set(names)) != len(names):
            problems.append(f"routing.dispatches: repeated names: {names}")
        gs = self.global_sidecar
        if gs.mode == "namespace" and gs.apply and not gs.namespaces:
            problems.append("global_sidecar.namespaces: namespace mode needs the namespaces")
        if not hosts.is_valid_host(gs.service_name) or "." in gs.service_name:
            problems.append(f"global_sidecar.service_name: not a name: {gs.service_name!r}")
        if not (self.watch.endpoints or self.watch.endpoint_slices):
            problems.append("watch: Endpoints or EndpointSlices must be watched")
        if self.xds.port != 0 and self.xds.port == self.admin.port:
            problems.append(f"xds.port: same as admin.port ({self.xds.port})")
        if problems:
            raise errors.ConfigError("; ".join(problems))

    def watched_kinds(self) -> tuple[str, ...]:
        kinds = ["services"]
        kinds += ["endpoints"] if self.watch.endpoints else []
        kinds += ["endpointslices"] if self.watch.endpoint_slices else []
        kinds += ["serviceentries"] if self.watch.service_entries else []
        return tuple(kinds)

    def wormhole_ports(self) -> ports.WormholePorts:
        """The port tracker: static ports plus, with auto_port, the Services' ports."""
        return ports.WormholePorts(
            http=self.listener.ports,
            tcp=self.listener.tcp_ports,
            auto=self.listener.auto_port,
            cleanup=self.listener.cleanup_wormhole_port,
            exclude=self.own_services(),
        )

    def own_services(self) -> tuple[tuple[str, str], ...]:
        """(namespace, name) of the global-sidecar Services of the current mode."""
        return tuple((ns, self.global_sidecar.service_name) for ns in self.sidecar_namespaces())

    def sidecar_namespaces(self) -> tuple[str, ...]:
        """Where global-sidecar Services live in the current mode."""
        if self.global_sidecar.mode == "cluster":
            return (self.mesh.global_sidecar_namespace,)
        if self.global_sidecar.mode == "namespace":
            return self.global_sidecar.namespaces
        return ()

    def mesh_side_options(self) -> meshside.MeshSideOptions:
        gs = self.global_sidecar
        return meshside.MeshSideOptions(
            mode=gs.mode,
            root_namespace=self.mesh.istio_namespace,
            sidecar_namespace=self.mesh.global_sidecar_namespace,
            namespaces=gs.namespaces,
            service_name=gs.service_name,
            app_label=gs.app_label,
            cluster_domain=self.mesh.cluster_domain,
            dispatches=self.routing.dispatches,
            passthrough_by_default=gs.passthrough_by_default,
            revision=gs.revision,
        )

    def render_options(self) -> rendering.RenderOptions:
        return rendering.RenderOptions(
            listener_address=self.listener.address,
            listener_ports=self.listener.ports,
            tcp_ports=self.listener.tcp_ports,
            passthrough_by_default=self.routing.passthrough_by_default,
            upstream=self.routing.upstream,
            tcp_steering=self.global_sidecar.tcp_steering,
            own_services=self.own_services(),
            dispatches=self.routing.dispatches,
            cluster_domain=self.mesh.cluster_domain,
            als=self.als.target() if self.als.enabled else None,
        )
