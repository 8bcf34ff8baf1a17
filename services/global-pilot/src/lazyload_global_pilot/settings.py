"""Settings of global-pilot: the shared groups plus `xds`, `listener`, `als` and `watch`.

Environment variables follow the contract (`LAZYLOAD_` prefix, `__` nesting), for example
`LAZYLOAD_XDS__PORT=0`, `LAZYLOAD_LISTENER__PORTS=80,8080`, `LAZYLOAD_ALS__HOST=127.0.0.1`,
`LAZYLOAD_WATCH__DEBOUNCE=0.1`. `check()` runs the cross-field checks before anything connects.
"""

from __future__ import annotations

from typing import Annotated, Any

from lazyload_common import errors, hosts
from lazyload_common import settings as common
from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode

from lazyload_global_pilot import rendering


class XdsSettings(BaseModel):
    """The ADS gRPC server the global-sidecar Envoys connect to."""

    host: str = Field("0.0.0.0", description="Address the xDS server binds.")
    port: int = Field(18000, ge=0, le=65535, description="xDS port; 0 picks a free port.")


class ListenerSettings(BaseModel):
    """The global-sidecar's HTTP listeners: the wormhole ports fenced sidecars send calls to."""

    address: str = Field("0.0.0.0", description="Address the global-sidecar's listeners bind.")
    ports: Annotated[tuple[int, ...], NoDecode] = Field(
        (80,), description="Listener ports, comma-separated or a JSON list; Slime's default is 80."
    )

    @field_validator("ports", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(
                int(p) for p in value.replace("[", "").replace("]", "").split(",") if p.strip()
            )
        if isinstance(value, int):
            return (value,)
        return value


class AlsSettings(BaseModel):
    """Where the global-sidecar streams its access logs (accesslog-ingest's ALS listener)."""

    enabled: bool = Field(True, description="Render the ALS access logger and its cluster.")
    host: str = Field("127.0.0.1", description="Host (IP or DNS name) of accesslog-ingest.")
    port: int = Field(
        8082, ge=1, le=65535, description="ALS port of accesslog-ingest (Slime's 8082)."
    )


class WatchSettings(BaseModel):
    """How the mesh is watched and how often it is rendered."""

    debounce: float = Field(
        0.1, ge=0, description="Seconds a batch of changes is gathered before one render."
    )
    endpoints: bool = Field(True, description="Watch core/v1 Endpoints.")
    endpoint_slices: bool = Field(
        True, description="Watch discovery.k8s.io/v1 EndpointSlices (preferred when present)."
    )


class GlobalPilotSettings(BaseSettings):
    """Everything global-pilot reads from the environment."""

    model_config = common.service_config()

    kube: common.KubeSettings = Field(default_factory=common.KubeSettings)
    admin: common.AdminSettings = Field(default_factory=common.AdminSettings)
    mesh: common.MeshSettings = Field(default_factory=common.MeshSettings)
    xds: XdsSettings = Field(default_factory=XdsSettings)
    listener: ListenerSettings = Field(default_factory=ListenerSettings)
    als: AlsSettings = Field(default_factory=AlsSettings)
    watch: WatchSettings = Field(default_factory=WatchSettings)
    log_level: str = Field("INFO", description="Python log level.")

    def check(self) -> None:
        """Raise `ConfigError` naming every setting that cannot work."""
        problems: list[str] = []
        if not hosts.is_valid_host(self.mesh.cluster_domain):
            problems.append(f"mesh.cluster_domain: not a DNS name: {self.mesh.cluster_domain!r}")
        if not self.listener.ports:
            problems.append("listener.ports: at least one port is needed")
        if any(not 0 < p < 65536 for p in self.listener.ports):
            problems.append(f"listener.ports: out of range: {self.listener.ports}")
        if len(set(self.listener.ports)) != len(self.listener.ports):
            problems.append(f"listener.ports: repeated: {self.listener.ports}")
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
        return tuple(kinds)

    def render_options(self) -> rendering.RenderOptions:
        return rendering.RenderOptions(
            listener_address=self.listener.address,
            listener_ports=self.listener.ports,
            cluster_domain=self.mesh.cluster_domain,
            als=rendering.AlsTarget(host=self.als.host, port=self.als.port)
            if self.als.enabled
            else None,
        )
