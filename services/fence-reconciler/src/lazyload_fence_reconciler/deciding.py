"""A bounded record of the recent decisions about each fence's hosts: the "why not" of `explain`.

The fence status says which hosts a fence holds and why; it cannot say why a host is *not* there.
The reconciler notes here what it decided about each edge and host: learned, dropped by the
admission gate (`dispatched`, `external-dropped`, `unknown-service`), rejected (an invalid edge, a
refused write), waiting for the caller's Service, ignored by policy, refused by the host cap, and
removed (expired, reset, no longer in spec); what one cycle of a fence decided is `of_cycle`
(pure). The admin API serves the record at `GET /api/v1/fences/{ns}/{name}/decisions`.

Bounded twice: per fence an LRU of at most `per_fence` (host, outcome, reason) entries (a repeat
moves its entry to the end and counts, so a host refreshed every few minutes does not push the
rare drop out), and an LRU of at most `fences` fences. Memory only: a restarted reconciler starts
empty (the fence status still holds what was learned). No I/O.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

from lazyload_fence_reconciler import desiring, fences

Key = tuple[str, str]

LEARNED = "learned"
DROPPED = "dropped"
REJECTED = "rejected"
WAITING = "waiting"
IGNORED = "ignored"
CAPPED = "capped"
REMOVED = "removed"
OUTCOMES = (LEARNED, DROPPED, REJECTED, WAITING, IGNORED, CAPPED, REMOVED)

Note = tuple[str, str, str]
"""(host, outcome, reason): one entry `Decisions.note` takes."""


def of_cycle(
    edges: Iterable[desiring.Edge],
    desired: desiring.Desired,
    before: desiring.State,
    *,
    reset: bool,
    max_learned_hosts: int,
) -> list[Note]:
    """What one cycle of a fence decided: each edge learned or refused by the host cap, each
    host removed (reset, expired, or gone from spec, selector and expansion)."""
    capped = set(desired.capped)
    cap_reason = f"the fence is at its cap of {max_learned_hosts} learned hosts"
    notes = [
        (e.host, CAPPED, cap_reason)
        if e.host in capped
        else (e.host, LEARNED, "learned from traffic")
        for e in edges
    ]
    for host in desired.removed:
        if reset:
            reason = "reset"
        elif desiring.LEARNED in before.reasons.get(host, ()):
            reason = "expired: no traffic within the recycling time"
        else:
            reason = "no longer in spec, selector or expansion"
        notes.append((host, REMOVED, reason))
    return notes


@dataclass
class Decision:
    """One kind of decision about one host of a fence, with when it was first and last made."""

    host: str
    outcome: str
    reason: str
    first_at: float
    last_at: float
    count: int = 1

    def as_dict(self) -> dict[str, object]:
        """Every field, in order; the times in RFC 3339."""
        return {
            **asdict(self),
            "first_at": fences.format_time(self.first_at),
            "last_at": fences.format_time(self.last_at),
        }


class Decisions:
    """The recent decisions per fence (see the module docstring for the bounds)."""

    def __init__(
        self,
        *,
        per_fence: int = 64,
        fences: int = 4096,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.per_fence = per_fence
        self.max_fences = fences
        self.clock = clock
        self._fences: OrderedDict[Key, OrderedDict[tuple[str, str, str], Decision]] = OrderedDict()

    def note(self, key: Key, host: str, outcome: str, reason: str = "") -> None:
        """Record that `outcome` (one of `OUTCOMES`) was decided for `host` of fence `key`."""
        now = self.clock()
        host, reason = host[:300], reason[:300]  # a forged host never costs more than this
        record = self._fences.get(key)
        if record is None:
            record = self._fences[key] = OrderedDict()
            while len(self._fences) > self.max_fences:
                self._fences.popitem(last=False)
        else:
            self._fences.move_to_end(key)
        entry_key = (host, outcome, reason)
        entry = record.get(entry_key)
        if entry is None:
            record[entry_key] = Decision(host, outcome, reason, now, now)
            while len(record) > self.per_fence:
                record.popitem(last=False)
        else:
            entry.last_at, entry.count = now, entry.count + 1
            record.move_to_end(entry_key)

    def of(self, key: Key, host: str | None = None) -> list[Decision]:
        """The decisions kept for fence `key` (about `host` only, when given), newest last."""
        record = self._fences.get(key)
        if record is None:
            return []
        return [d for d in record.values() if host is None or d.host == host]

    def __len__(self) -> int:
        return len(self._fences)
