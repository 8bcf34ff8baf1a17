"""Where desired Sidecars go: the `Sink` interface and the `Result` of one fence.

Two sinks implement it: `applying.KubeSink` (the API server, the default) and `gitops.FileSink`
(one YAML file per Sidecar in a directory, for a GitOps repository). The consumer only knows this
interface, so neither sink knows about NATS and the consumer never talks to the API.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from lazyload_common import events

from lazyload_sidecar_writer.rendering import RawObject

Outcome = Literal["applied", "unchanged", "deleted", "conflict", "stale"]
Write = Literal["create", "replace", "delete"]


@dataclass(frozen=True)
class Result:
    """What a sink did for one fence; `write` is the verb when something was written.

    `reason` is a CamelCase cause for `conflict` (`SidecarConflict`, `NoWorkloadSelector`), as
    the fence's status condition and Event carry it.
    """

    action: Outcome
    resource_version: str = ""
    message: str = ""
    write: Write | None = None
    reason: str = ""


class Sink(Protocol):
    """Applies the desired Sidecar of a fence (None = remove the managed one)."""

    async def apply(self, event: events.FenceChanged, desired: RawObject | None) -> Result: ...

    async def list_managed(self) -> list[RawObject]:
        """Every Sidecar the sink holds that lazyload manages (for drift repair)."""
        ...

    async def probe(self) -> bool:
        """True when the sink can be written to (for /readyz)."""
        ...

    def forget(self, namespace: str, name: str) -> None:
        """Drop anything remembered of this Sidecar: the next apply reads the stored one."""
        ...
