"""The events lazyload puts on NATS, one pydantic model each.

Every event has a literal `kind` and a `schema_version`; `AnyEvent` is the discriminated union the
codec decodes. Readers ignore unknown fields (a newer writer may add some); raising a schema version
means a new model next to the old one, never an edit of it.

Times are unix seconds that can be real: finite, not before 1970 and not after the last second an
RFC 3339 timestamp can hold (`UnixTime`). A payload with an impossible time (a negative start
time, year 0) does not decode, so the consumer dead-letters that one message instead of failing
on it later, with its neighbours.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

MAX_TIME = 253402300799.0
"""9999-12-31T23:59:59Z: the last second a timestamp (RFC 3339, a Kubernetes status) can hold."""
UnixTime = Annotated[float, Field(ge=0.0, le=MAX_TIME, allow_inf_nan=False)]
"""Unix seconds of something that happened: finite, from 1970 to `MAX_TIME`."""


def is_valid_time(value: float) -> bool:
    """True for what `UnixTime` accepts (for values that did not come through a model)."""
    return 0.0 <= value <= MAX_TIME  # NaN compares false


class _Event(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class DependencyObserved(_Event):
    """A caller was seen calling a destination host (an edge of the dependency graph).

    Published by accesslog-ingest on `lazyload.deps.<source_namespace>.<source_name>`.
    """

    kind: Literal["dependency"] = "dependency"
    schema_version: Literal[1] = 1
    source_namespace: str
    source_name: str = Field(description="Service name of the caller (or workload name).")
    source_kind: Literal["service", "workload", "unresolved"] = "service"
    destination_host: str = Field(description="FQDN of the destination, lower case, no port.")
    destination_port: int | None = None
    destination_namespace: str | None = Field(
        default=None, description="Set when the host is a Service."
    )
    destination_service: str | None = Field(
        default=None, description="Set when the host is a Service."
    )
    external: bool = Field(
        default=False, description="True when the host is not a Service of the mesh."
    )
    protocol: Literal["http", "grpc", "tcp"] = "http"
    first_seen: UnixTime = Field(description="Unix time of the request that taught this edge.")
    observed_at: UnixTime = Field(default_factory=time.time, description="Unix time of publishing.")
    reporter: str = Field(default="", description="Which ingest replica published it.")

    @property
    def edge_key(self) -> str:
        port = self.destination_port if self.destination_port is not None else ""
        return f"{self.source_namespace}/{self.source_name}->{self.destination_host}:{port}"


class FenceChanged(_Event):
    """The desired host set of a ServiceFence changed (or the fence was disabled or deleted).

    Published by fence-reconciler on `lazyload.fence.<namespace>.<name>`; this is the topic users
    subscribe to. `hosts` are fence domains: an FQDN (`reviews.default.svc.cluster.local`, an
    external host) or a whole namespace (`<namespace>/*`).
    """

    kind: Literal["fence"] = "fence"
    schema_version: Literal[1] = 1
    namespace: str
    name: str
    uid: str = Field(
        default="", description="metadata.uid of the ServiceFence (for ownerReferences)."
    )
    revision: int = Field(ge=0, description="Increases with every change of the desired state.")
    enabled: bool = True
    deleted: bool = False
    workload_selector: dict[str, str] | None = Field(
        default=None,
        description="Labels of the workloads the Sidecar applies to; None = cannot render.",
    )
    hosts: list[str] = Field(default_factory=list, description="Full desired set, sorted.")
    added: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)
    reasons: dict[str, list[str]] = Field(
        default_factory=dict, description="Per host: learned, expanded, alias, spec, selector..."
    )
    changed_at: UnixTime = Field(default_factory=time.time)
    first_seen: dict[str, UnixTime] = Field(
        default_factory=dict,
        description="Per added learned host: Unix time of the first call that taught it "
        "(ingest's first_seen, to the second); the writer's first call -> Sidecar SLI.",
    )


class SidecarApplied(_Event):
    """sidecar-writer acted on a fence event: the Sidecar was written, deleted, or refused.

    Published on `lazyload.sidecar.<namespace>.<name>` after the write returned.
    """

    kind: Literal["sidecar"] = "sidecar"
    schema_version: Literal[1] = 1
    namespace: str
    name: str
    revision: int = Field(ge=0, description="The fence revision this Sidecar carries.")
    action: Literal["applied", "unchanged", "deleted", "conflict", "dead-lettered"]
    egress_hosts: list[str] = Field(default_factory=list)
    resource_version: str = ""
    applied_at: UnixTime = Field(default_factory=time.time)
    message: str = ""


class DeadLetter(_Event):
    """Something a service could not process, with the reason. On `lazyload.dlq.<service>`."""

    kind: Literal["dead-letter"] = "dead-letter"
    schema_version: Literal[1] = 1
    service: str
    reason: str
    subject: str = ""
    payload: bytes = b""
    at: UnixTime = Field(default_factory=time.time)


AnyEvent = Annotated[
    DependencyObserved | FenceChanged | SidecarApplied | DeadLetter, Field(discriminator="kind")
]
EVENT_ADAPTER: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)
