"""What happened to a fence's Sidecar, told on the ServiceFence itself: a condition and Events.

One condition, `SidecarReady`, in the ServiceFence's `/status` subresource (`status.conditions`,
which the CRD allows; conditions of other types, e.g. fence-reconciler's `SpecValid`, are kept):

| outcome | status | reason |
|---|---|---|
| Sidecar written or already up to date | True | `SidecarApplied` |
| a Sidecar of that name that lazyload does not manage | False | `SidecarConflict` |
| no workload selector | False | `NoWorkloadSelector` |
| render invalid / API refused it (dead-lettered) | False | `InvalidSidecar` / `ApiRejected` |
| fence disabled (Sidecar removed) | False | `FenceDisabled` |

Cheap: the last condition reported per fence is remembered (bounded), and only a different one
costs a GET of the fence; it is written (JSON merge patch on the fence's resourceVersion, re-read
on 409) only when the stored condition differs, so a steady fence costs no status writes and a
restart costs one GET per fence. `lastTransitionTime` moves only when the status flips.

Events (core/v1, in the fence's namespace, involvedObject the ServiceFence, reportingComponent
`lazyload-sidecar-writer`) are posted on transitions only, by the replica whose status patch won:
Warning `SidecarConflict` when the condition becomes a conflict, Normal `SidecarConflictResolved`
when it goes from a conflict to ready.

A 404 (fence gone) or 403 (no RBAC) is logged and not retried; 429/5xx/network failures raise
`TemporaryError`, so the fence event is redelivered and the report tried again.
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass
from typing import Any, Protocol

from lazyload_common import errors, events, kube

from lazyload_sidecar_writer import planning, rendering
from lazyload_sidecar_writer.applying import KubeSink
from lazyload_sidecar_writer.bounded import Lru
from lazyload_sidecar_writer.sinks import Result

log = logging.getLogger(__name__)

CONDITION = "SidecarReady"
COMPONENT = "lazyload-sidecar-writer"
CONFLICT = planning.CONFLICT_REASON
RESOLVED = "SidecarConflictResolved"
FENCE_PLURAL = "servicefences"
CONFLICT_RETRIES = 5


@dataclass(frozen=True)
class Condition:
    """The `SidecarReady` condition without its timestamps."""

    status: str
    reason: str
    message: str


class Reporter(Protocol):
    """Where the consumer reports each fence's outcome (`FenceStatus`, or a fake in tests)."""

    async def report(self, event: events.FenceChanged, condition: Condition) -> None: ...

    def forget(self, event: events.FenceChanged) -> None: ...


def condition_for(event: events.FenceChanged, result: Result) -> Condition | None:
    """The condition a sink result means for the fence; None = nothing to report."""
    key = f"{event.namespace}/{event.name}"
    if event.deleted:
        return None
    if result.action in ("applied", "unchanged"):
        return Condition("True", "SidecarApplied", f"Sidecar {key} is applied")
    if result.action == "deleted":
        return Condition("False", "FenceDisabled", f"fence disabled; Sidecar {key} removed")
    if result.action == "conflict":
        return Condition("False", result.reason or CONFLICT, result.message)
    return None  # stale: a newer revision reports


def dead_letter_condition(reason: str, message: str) -> Condition:
    """The condition of a dead-lettered fence (`invalid-render` or `api-rejected`)."""
    kind = "InvalidSidecar" if reason == "invalid-render" else "ApiRejected"
    return Condition("False", kind, message[:1024])


def fence_path(namespace: str, name: str) -> str:
    group, version = rendering.FENCE_API_VERSION.split("/")
    return f"/apis/{group}/{version}/namespaces/{namespace}/{FENCE_PLURAL}/{name}"


def format_time(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


class FenceStatus:
    """Writes `SidecarReady` and posts Events through the `KubeSink`'s client and rate limit."""

    def __init__(
        self, sink: KubeSink, *, limit: int = 10000, clock: Any = time.time, instance: str = ""
    ) -> None:
        self.sink = sink
        self.clock = clock
        self.instance = instance or socket.gethostname()
        self._reported: Lru[tuple[str, str, str], Condition] = Lru(limit)

    def forget(self, event: events.FenceChanged) -> None:
        self._reported.pop((event.namespace, event.name, event.uid))

    async def report(self, event: events.FenceChanged, condition: Condition) -> None:
        """Make the fence's stored `SidecarReady` equal `condition` (see the module docstring)."""
        key = (event.namespace, event.name, event.uid)
        if self._reported.get(key) == condition:
            return
        fence = f"{event.namespace}/{event.name}"
        try:
            await self._write(event, condition)
        except (kube.KubeNotFound, kube.KubeUnprocessable) as e:
            log.info("fence %s: status not written: %s", fence, e)
        except kube.KubeError as e:
            if kube.is_retryable(e):  # 409 still, 429, 5xx, no answer
                raise errors.TemporaryError(f"status of fence {fence}: {e}", delay=1.0) from e
            log.warning("fence %s: status not written: %s", fence, e)  # 401/403: RBAC
        except errors.TemporaryError as e:  # still conflicting after the re-reads
            raise errors.TemporaryError(f"status of fence {fence}: {e}", delay=1.0) from e
        self._reported.set(key, condition)

    async def _write(self, event: events.FenceChanged, condition: Condition) -> None:
        api = self.sink.api
        target = fence_path(event.namespace, event.name)
        for _ in range(CONFLICT_RETRIES):
            fence: dict[str, Any] = await self.sink.call(api.get, target, missing_ok=True)
            meta = fence.get("metadata", {})
            if event.uid and meta.get("uid") and meta["uid"] != event.uid:
                return  # another incarnation of the fence: its own events report
            status = fence.get("status") or {}
            stored = [c for c in status.get("conditions") or [] if isinstance(c, dict)]
            old = next((c for c in stored if c.get("type") == CONDITION), None)
            if old is not None and _same(old, condition):
                return
            now = format_time(self.clock())
            new = {
                "type": CONDITION,
                "status": condition.status,
                "reason": condition.reason,
                "message": condition.message,
                "lastTransitionTime": now,
                "observedGeneration": int(meta.get("generation") or 0),
            }
            if old is not None and old.get("status") == condition.status:
                new["lastTransitionTime"] = old.get("lastTransitionTime") or now
            others = [c for c in stored if c.get("type") != CONDITION]
            body = {
                "metadata": {"resourceVersion": str(meta.get("resourceVersion", ""))},
                "status": {"conditions": [*others, new]},
            }
            try:
                written = await self.sink.call(api.merge_patch, target + "/status", body)
            except kube.KubeConflict:
                continue
            await self._announce(event, old, condition, written)
            return
        raise errors.TemporaryError("still conflicting", delay=1.0)

    async def _announce(
        self,
        event: events.FenceChanged,
        old: dict[str, Any] | None,
        condition: Condition,
        fence: dict[str, Any],
    ) -> None:
        """Post the Event of a transition into or out of a conflict (failures only logged)."""
        was_conflict = old is not None and old.get("reason") == CONFLICT
        if condition.reason == CONFLICT:
            kind, reason = "Warning", CONFLICT
        elif was_conflict and condition.status == "True":
            kind, reason = "Normal", RESOLVED
        else:
            return
        body = self.event_body(event, fence, kind, reason, condition.message)
        try:
            await self.sink.call(
                self.sink.api.create, f"/api/v1/namespaces/{event.namespace}/events", body
            )
        except Exception as e:
            log.warning(
                "fence %s/%s: Event %s not posted: %s", event.namespace, event.name, reason, e
            )

    def event_body(
        self,
        event: events.FenceChanged,
        fence: dict[str, Any],
        kind: str,
        reason: str,
        message: str,
    ) -> dict[str, Any]:
        meta = fence.get("metadata", {})
        now = format_time(self.clock())
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{event.name}.", "namespace": event.namespace},
            "involvedObject": {
                "apiVersion": rendering.FENCE_API_VERSION,
                "kind": rendering.FENCE_KIND,
                "namespace": event.namespace,
                "name": event.name,
                "uid": str(meta.get("uid") or event.uid),
                "resourceVersion": str(meta.get("resourceVersion", "")),
            },
            "reason": reason,
            "message": message[:1024],
            "type": kind,
            "action": "WriteSidecar",
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }


def _same(stored: dict[str, Any], condition: Condition) -> bool:
    return (stored.get("status"), stored.get("reason"), stored.get("message")) == (
        condition.status,
        condition.reason,
        condition.message,
    )
