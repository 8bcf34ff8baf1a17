"""Pure decision: what to do with the stored Sidecar, given a fence event and its desired Sidecar.

`plan(event, desired, current)` returns a `Plan` (data, no I/O); `applying` carries it out and
re-plans after a 409. The rules, in order:

1. a stored Sidecar without `app.kubernetes.io/managed-by: lazyload` is never touched: `conflict`;
2. a stored Sidecar carrying a newer fence revision (same ServiceFence uid) wins: `stale`;
3. no desired Sidecar (fence disabled or deleted): `delete` it, or `absent` when there is none;
4. nothing stored: `create`;
5. otherwise `replace` on the stored resourceVersion when spec, labels or ownerReferences differ,
   or when the stored revision annotation is older than the event (an annotation-only write: the
   annotation is the high-water mark every replica decides staleness from, so it must move even
   when the content does not, or a reordered older revision handled by another replica could
   win); else `unchanged`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Literal

from lazyload_common import events

from lazyload_sidecar_writer import rendering
from lazyload_sidecar_writer.rendering import RawObject

Action = Literal["create", "replace", "delete", "unchanged", "absent", "conflict", "stale"]
WRITES: frozenset[str] = frozenset({"create", "replace", "delete"})
CONFLICT_REASON = "SidecarConflict"


@dataclass(frozen=True)
class Plan:
    """One decision; `body` is what to send for create/replace."""

    action: Action
    body: RawObject | None = None
    resource_version: str = ""
    message: str = ""
    current_revision: int | None = field(default=None)
    reason: str = ""


def plan(
    event: events.FenceChanged,
    desired: RawObject | None,
    current: RawObject | None,
    *,
    track_revision: bool = True,
) -> Plan:
    """Decide create/replace/delete/unchanged/absent/conflict/stale (see the module docstring).

    `track_revision=False` (the GitOps sink: one writer, and a commit per annotation bump would
    only be noise for reviewers) never writes for the revision annotation alone.
    """
    key = f"{event.namespace}/{event.name}"
    if current is None:
        if desired is None:
            return Plan("absent", message=f"Sidecar {key} already absent")
        return Plan("create", body=desired)
    rv = str(current.get("metadata", {}).get("resourceVersion", ""))
    if not rendering.is_managed(current):
        return Plan(
            "conflict",
            resource_version=rv,
            message=f"Sidecar {key} exists and is not managed by lazyload "
            f"(no {rendering.MANAGED_BY_LABEL}={rendering.MANAGED_BY} label); left alone",
            reason=CONFLICT_REASON,
        )
    stored = rendering.fence_revision(current)
    if is_stale(event, current):
        return Plan(
            "stale",
            resource_version=rv,
            current_revision=stored,
            message=f"fence revision {event.revision} is older than {stored} carried by {key}",
        )
    if desired is None:
        return Plan("delete", resource_version=rv, current_revision=stored)
    body = replacement(desired, current)
    if essence(body) == essence(current) and not (track_revision and behind(event, current)):
        return Plan("unchanged", resource_version=rv, current_revision=stored)
    return Plan("replace", body=body, resource_version=rv, current_revision=stored)


def is_stale(event: events.FenceChanged, current: RawObject) -> bool:
    """True when `current` carries a newer revision of the same ServiceFence than `event`."""
    stored = rendering.fence_revision(current)
    if stored is None:
        return False
    owners = {ref.get("uid") for ref in owner_references(current)}
    if event.uid and owners and event.uid not in owners:
        return False  # the fence was deleted and created again: its revisions start over
    return event.revision < stored


def behind(event: events.FenceChanged, current: RawObject) -> bool:
    """True when `current` carries no revision, or an older one than `event` (same content)."""
    stored = rendering.fence_revision(current)
    return stored is None or stored < event.revision


def replacement(desired: RawObject, current: RawObject) -> RawObject:
    """`desired` as a PUT body over `current`: its resourceVersion, finalizers, foreign labels
    and annotations are kept (labelling webhooks and GitOps tools add their own: dropping them
    would make a drift that both sides rewrite for ever), and so are its ownerReferences when the
    event did not know the uid. lazyload's own labels (`rendering.OWNED_LABELS`) are the desired
    ones."""
    body = copy.deepcopy(desired)
    meta, old = body["metadata"], current.get("metadata", {})
    foreign = {
        k: v for k, v in (old.get("labels") or {}).items() if k not in rendering.OWNED_LABELS
    }
    meta["labels"] = {**foreign, **meta.get("labels", {})}
    meta["resourceVersion"] = str(old.get("resourceVersion", ""))
    if old.get("finalizers"):
        meta["finalizers"] = list(old["finalizers"])
    meta["annotations"] = {**(old.get("annotations") or {}), **meta.get("annotations", {})}
    if "ownerReferences" not in meta and old.get("ownerReferences"):
        meta["ownerReferences"] = copy.deepcopy(old["ownerReferences"])
    return body


def essence(sidecar: RawObject) -> tuple[object, object, object]:
    """What decides whether a write is needed: spec, labels and ownerReferences."""
    meta = sidecar.get("metadata", {})
    return (sidecar.get("spec") or {}, meta.get("labels") or {}, owner_references(sidecar))


def owner_references(sidecar: RawObject) -> list[RawObject]:
    return list(sidecar.get("metadata", {}).get("ownerReferences") or [])
