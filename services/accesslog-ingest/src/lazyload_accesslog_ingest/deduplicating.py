"""Which edges to publish: a per-replica, bounded memory of edges already published (pure).

An edge is admitted when it is neither being published (pending) nor was published less than one
refresh interval ago. It counts as published only once JetStream acked it (`confirm`); an edge
whose publish is given up is `release`d and will be admitted again when next seen. The memory
is an LRU bounded by `max_edges`: a forgotten edge is published again (more traffic, never a lost
edge). Times are the caller's clock, in seconds.

`forget(caller, hosts)` drops the edges of a fence's caller to hosts the fence no longer holds (a
reset, a recycled host): the next sighting publishes at once instead of after the refresh
interval, under a message id of its own (`msg_id`), which JetStream's duplicate window does not
drop as a repeat of the earlier publish.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Iterable


class Verdict(enum.Enum):
    NEW = "new"
    """Never published (or forgotten): publish it."""
    REFRESH = "refresh"
    """Published more than a refresh interval ago: publish it again."""
    DUPLICATE = "duplicate"
    """Pending, or published within the refresh interval: suppress it."""


class EdgeMemory:
    """Edges published recently (LRU, bounded) and edges being published."""

    def __init__(self, *, max_edges: int, refresh_interval: float) -> None:
        self.max_edges = max_edges
        self.refresh_interval = refresh_interval
        self._published: OrderedDict[str, float] = OrderedDict()
        self._pending: set[str] = set()
        self._epochs: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._published)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def admit(self, key: str, now: float) -> Verdict:
        """Decide about an edge just seen; an admitted edge becomes pending."""
        if key in self._pending:
            return Verdict.DUPLICATE
        published_at = self._published.get(key)
        if published_at is not None:
            self._published.move_to_end(key)  # still in use: keep it in memory
            if now - published_at < self.refresh_interval:
                return Verdict.DUPLICATE
        self._pending.add(key)
        return Verdict.NEW if published_at is None else Verdict.REFRESH

    def admit_all(self, keys: Iterable[str], now: float) -> tuple[list[tuple[str, Verdict]], int]:
        """`admit` for each of `keys` (distinct): the admitted keys with their verdicts, and
        how many were duplicates (one loop with local bindings: the hot path)."""
        pending, published = self._pending, self._published
        refresh, move_to_end = self.refresh_interval, published.move_to_end
        admitted: list[tuple[str, Verdict]] = []
        duplicates = 0
        for key in keys:
            if key in pending:
                duplicates += 1
                continue
            published_at = published.get(key)
            if published_at is not None:
                move_to_end(key)
                if now - published_at < refresh:
                    duplicates += 1
                    continue
            pending.add(key)
            admitted.append((key, Verdict.NEW if published_at is None else Verdict.REFRESH))
        return admitted, duplicates

    def confirm(self, key: str, now: float) -> None:
        """JetStream acked the edge: remember it as published at `now`."""
        self._pending.discard(key)
        self._published[key] = now
        self._published.move_to_end(key)
        while len(self._published) > self.max_edges:
            self._published.popitem(last=False)

    def release(self, key: str) -> None:
        """The edge will not be published after all (buffer full, shutting down)."""
        self._pending.discard(key)

    def window(self, now: float) -> int:
        """Index of the refresh window `now` falls in (part of the JetStream message id)."""
        return int(now // self.refresh_interval)

    def msg_id(self, key: str, now: float) -> str:
        """The JetStream message id of publishing `key` now: the same for every publish of one
        refresh window (a retry, another replica), a new one after `forget`."""
        epoch = self._epochs.get(key)
        window = self.window(now)
        return f"{key}#{window}" if epoch is None else f"{key}#{window}~{epoch}"

    def forget(self, caller: str, hosts: Iterable[str]) -> int:
        """Drop the published edges of `caller` (`<namespace>/<name>`) to any of `hosts`; how
        many were dropped."""
        wanted = set(hosts)
        prefix = f"{caller}->"
        dropped = [
            key
            for key in self._published
            if key.startswith(prefix) and key[len(prefix) :].rpartition(":")[0] in wanted
        ]
        for key in dropped:
            del self._published[key]
            self._epochs[key] = self._epochs.pop(key, 0) + 1
            while len(self._epochs) > self.max_edges:
                self._epochs.popitem(last=False)
        return len(dropped)
