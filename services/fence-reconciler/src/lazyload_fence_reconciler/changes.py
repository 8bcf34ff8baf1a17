"""FenceChanged events: built from a fence and its state, and what was last published (`Sent`).

The reconciler publishes one FenceChanged per revision of a fence (and one when it is deleted).
This module decides, from values only, whether one is due and what it carries: `due()` after a
cycle of a fence, `deletion()` once a fence is gone, and the revision floor a recreated fence
continues from. `Sent` is the reconciler's memory of the last event per fence name, seeded from
the stream at start-up (`Sent.of`). No I/O here: `reconciling` publishes what these return.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from lazyload_common import events

from lazyload_fence_reconciler import desiring, fences


@dataclass(frozen=True)
class Sent:
    """The last event published for a fence name."""

    uid: str
    state: desiring.State
    deleted: bool = False

    @classmethod
    def of(cls, event: events.FenceChanged) -> Sent:
        state = desiring.State(
            revision=event.revision,
            enabled=event.enabled,
            workload_selector=event.workload_selector,
            hosts=tuple(event.hosts),
        )
        return cls(event.uid, state, event.deleted)

    def live(self, uid: str) -> bool:
        """Whether this is the last event of the fence incarnation `uid`, not of its deletion."""
        return self.uid == uid and not self.deleted


def to_event(
    fence: fences.Fence,
    state: desiring.State,
    *,
    added: Sequence[str] | None = None,
    removed: Sequence[str] = (),
    deleted: bool = False,
    now: float,
) -> events.FenceChanged:
    """The FenceChanged event of `state` (added defaults to every host: a first publication).

    `first_seen` carries, for every added host learned from traffic, when its first call was
    seen: sidecar-writer measures first call -> Sidecar written from it.
    """
    added = list(state.hosts if added is None else added)
    learned = fence.learned(default_time=now)
    first_seen = {h: learned[h].first_seen for h in added if h in learned}
    return events.FenceChanged(
        namespace=fence.namespace,
        name=fence.name,
        uid=fence.uid,
        revision=state.revision,
        enabled=state.enabled and not deleted,
        deleted=deleted,
        workload_selector=state.workload_selector,
        hosts=list(state.hosts),
        added=added,
        removed=list(removed),
        reasons={h: list(r) for h, r in state.reasons.items()},
        changed_at=now,
        first_seen=first_seen,
    )


def deleted_event(
    fence: fences.Fence, last: desiring.State | None, *, now: float
) -> events.FenceChanged:
    """The event of a deleted fence: one revision past the last known, no hosts, all removed."""
    last = last or desiring.recorded(fence)
    revision = max(last.revision, fence.revision) + 1
    gone = desiring.State(revision=revision, enabled=False, workload_selector=None, hosts=())
    return to_event(fence, gone, added=(), removed=last.hosts, deleted=True, now=now)


def due(
    fence: fences.Fence, desired: desiring.Desired, sent: Sent | None, *, now: float
) -> events.FenceChanged | None:
    """The event to publish for `fence` as written after a cycle that computed `desired`; None
    when its revision was published already (or it has none yet).

    The state is the computed one when the written revision is the one computed, else the one
    the status records (another writer got there first). Added and removed hosts are the
    difference from the last event of the same fence; with no event for the name yet, the
    cycle's own difference; after a deletion or for another uid, every host is added.
    """
    if fence.revision == 0:
        return None
    same = sent is not None and sent.live(fence.uid)
    if same and sent is not None and sent.state.revision >= fence.revision:
        return None
    fresh = desired.state.revision == fence.revision
    state = desired.state if fresh else desiring.recorded(fence)
    if same and sent is not None:
        added = tuple(sorted(set(state.hosts) - set(sent.state.hosts)))
        removed = tuple(sorted(set(sent.state.hosts) - set(state.hosts)))
    elif sent is None and fresh and desired.changed:
        added, removed = desired.added, desired.removed
    else:
        added, removed = state.hosts, ()
    return to_event(fence, state, added=added, removed=removed, now=now)


def deletion(fence: fences.Fence, sent: Sent | None, *, now: float) -> events.FenceChanged | None:
    """The event announcing that `fence` (its last object known) is gone; None when its deletion
    was announced already."""
    if sent is not None and sent.deleted:
        return None
    return deleted_event(fence, sent.state if sent is not None else None, now=now)


def revision_floor(sent: Sent | None, uid: str) -> int:
    """The revision a fence of incarnation `uid` must continue above: the last one published
    for an earlier fence of the same name (0 when the last event is of this fence or none)."""
    return sent.state.revision if sent is not None and sent.uid != uid else 0


def fences_published(sent: Iterable[Sent], *, enabled: bool) -> int:
    """How many fences were last published alive and `enabled` (or disabled)."""
    return sum(1 for s in sent if not s.deleted and s.state.enabled == enabled)


def hosts_published(sent: Iterable[Sent]) -> int:
    """How many hosts the enabled fences last published hold, summed."""
    return sum(len(s.state.hosts) for s in sent if not s.deleted and s.state.enabled)
