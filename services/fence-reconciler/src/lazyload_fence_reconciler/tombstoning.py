"""Tombstones of deleted manual fences: a deleted manual fence is never recreated behind the user.

A tombstone is kept in memory and persisted as the annotation `lazyload.io/fence-deleted` on the
fence's Service (`<RFC 3339 time>;serviceFenced=<the Service's label then>`), so restarts and the
other replica see it. It holds until a fence of that name exists again (the user created one) or
the Service is labelled `slime.io/serviceFenced: "true"` after the deletion; the recorded label
follows later label changes, so "true" at deletion time has to change and come back. Called by
`reconciling` under the fence's lock; writes go through `applying`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from lazyload_fence_reconciler import applying, fences, policies, watching

log = logging.getLogger(__name__)
Key = tuple[str, str]


class Tombstones:
    """The tombstones this replica knows, backed by the Services' annotations."""

    def __init__(
        self, cluster: watching.Cluster, applier: applying.Applier, clock: Callable[[], float]
    ) -> None:
        self.cluster, self.applier, self.clock = cluster, applier, clock
        self._memory: dict[Key, str] = {}
        """Key -> the Service's serviceFenced label when the manual fence was deleted."""
        self._to_persist: set[Key] = set()

    def add(self, key: Key) -> None:
        """A manual fence was deleted (watch event): remember, persist at the next refresh."""
        self._memory[key] = self._fenced_label(key)
        self._to_persist.add(key)

    def discard(self, key: Key) -> None:
        """A fence of that name exists (watch event)."""
        self._memory.pop(key, None)
        self._to_persist.discard(key)

    def recorded(self, key: Key) -> str | None:
        """The label recorded at deletion; None when `key` has no tombstone."""
        if key in self._memory:
            return self._memory[key]
        service = self.cluster.service(key)
        value = service.annotations.get(fences.TOMBSTONE_ANNOTATION) if service else None
        return None if value is None else fences.tombstone_label(value)

    def holds(self, key: Key) -> bool:
        """Whether `key` must not be (re)created automatically."""
        recorded = self.recorded(key)
        if recorded is None:
            return False
        relabelled = self._fenced_label(key).strip().lower() == "true"
        return not relabelled or recorded.strip().lower() == "true"

    async def refresh(self, key: Key, *, exists: bool) -> None:
        """Persist a new tombstone, follow the label, or clear the tombstone."""
        recorded = self.recorded(key)
        if key in self._to_persist and not exists:
            self._to_persist.discard(key)
            await self._persist(key, self._memory.get(key, ""))
        elif recorded is None:
            return
        elif exists or not self.holds(key):
            self._memory.pop(key, None)
            service = self.cluster.service(key)
            if service is not None and fences.TOMBSTONE_ANNOTATION in service.annotations:
                await self.applier.mark_service(*key, None)
                log.info("cleared the tombstone of the manual fence %s/%s", *key)
        elif recorded != (label := self._fenced_label(key)):
            self._memory[key] = label
            await self._persist(key, label)

    def _fenced_label(self, key: Key) -> str:
        service = self.cluster.service(key)
        return (service.labels if service else {}).get(policies.FENCED_LABEL, "")

    async def _persist(self, key: Key, label: str) -> None:
        value = fences.tombstone_value(self.clock(), label)
        if await self.applier.mark_service(*key, value):
            log.info("manual fence %s/%s deleted: tombstone on its Service", *key)
