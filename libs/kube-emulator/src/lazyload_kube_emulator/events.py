"""The bounded history of changes and the live watchers that receive them."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import ApiError, status_body

Key = tuple[str, str]
Obj = dict[str, Any]


@dataclass(frozen=True)
class Change:
    """One committed change; `old` is the object before it (None for ADDED)."""

    rv: int
    key: Key
    type: str  # ADDED, MODIFIED, DELETED
    obj: Obj
    old: Obj | None


def translate(change: Change, matches: Callable[[Obj], bool]) -> tuple[str, Obj] | None:
    """The event a filtered watcher sees for a change (objects moving in/out of the filter)."""
    new_in = matches(change.obj)
    if change.type == "ADDED":
        return ("ADDED", change.obj) if new_in else None
    if change.type == "DELETED":
        return ("DELETED", change.obj) if new_in else None
    old_in = change.old is not None and matches(change.old)
    if new_in and old_in:
        return ("MODIFIED", change.obj)
    if new_in:
        return ("ADDED", change.obj)
    if old_in:
        return ("DELETED", change.obj)
    return None


CLOSED = ("CLOSED", {})
EXPIRED = (
    "ERROR",
    status_body(410, "too old resource version: the watch expired", "Expired"),
)
"""What an expired watch receives last (kube-apiserver's watch cache sends this to a watcher it
drops)."""


class Watcher:
    """One watch stream: a resource key, a filter and a queue of events to send."""

    def __init__(self, key: Key, matches: Callable[[Obj], bool]) -> None:
        self.key = key
        self.matches = matches
        self.queue: asyncio.Queue[tuple[str, Obj]] = asyncio.Queue()

    def offer(self, change: Change) -> None:
        if change.key != self.key:
            return
        event = translate(change, self.matches)
        if event is not None:
            self.queue.put_nowait(event)

    def close(self) -> None:
        self.queue.put_nowait(CLOSED)

    def expire(self) -> None:
        self.queue.put_nowait(EXPIRED)


class EventLog:
    """The last `size` changes plus the watchers to fan them out to."""

    def __init__(self, size: int) -> None:
        self._history: deque[Change] = deque()
        self._size = size
        self.compacted_rv = 0
        self._watchers: set[Watcher] = set()

    def append(self, change: Change) -> None:
        self._history.append(change)
        while len(self._history) > self._size:
            self.compacted_rv = self._history.popleft().rv
        for watcher in list(self._watchers):
            watcher.offer(change)

    def since(self, rv: int, key: Key) -> list[Change]:
        """Changes to key after rv; 410 Gone when the history no longer reaches back to rv."""
        if rv < self.compacted_rv:
            raise ApiError(410, f"too old resource version: {rv} ({self.compacted_rv + 1})", "Gone")
        return [c for c in self._history if c.rv > rv and c.key == key]

    def subscribe(self, watcher: Watcher) -> None:
        self._watchers.add(watcher)

    def unsubscribe(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)

    def close_all(self) -> None:
        for watcher in list(self._watchers):
            watcher.close()
        self._watchers.clear()

    def expire_all(self, rv: int) -> int:
        """End every watch with 410 Gone and forget the history up to `rv` (the current
        resourceVersion): resuming from an older one is 410 too. The number of watches ended."""
        watchers = list(self._watchers)
        for watcher in watchers:
            watcher.expire()
        self._watchers.clear()
        self.clear(rv)
        return len(watchers)

    def clear(self, rv: int) -> None:
        """Forget the history (after a reset): older resource versions become too old."""
        self._history.clear()
        self.compacted_rv = rv
