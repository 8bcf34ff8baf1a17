"""Tombstones of deleted manual fences: a deleted manual fence is never recreated behind the user.

A tombstone is kept in memory and persisted in one ConfigMap the reconciler owns,
`<mesh.global_sidecar_namespace>/<fence.tombstone_config_map>` (labelled
`lazyload.io/store=fence-tombstones`, watched by `watching.Cluster`), so restarts and the other
replica see it: key `<namespace>_<name>` of the fence, value
`<RFC 3339 time>;serviceFenced=<the Service's label then>;uid=<the Service's uid>`. It holds until
a fence of that name exists again (the user created one) or the Service is labelled
`slime.io/serviceFenced: "true"` after the deletion; the recorded label follows later label
changes, so "true" at deletion time has to change and come back. It dies with its Service, as the
annotation it replaces did: an entry whose Service is gone or has another uid (deleted and created
again) is void and removed. A workload fence (Slime's fenceLabelKeyAlias: no Service) has no uid in
its entry and lives with its workload as its fence does: the tombstone holds while a pod carries
the workload's label, and is void and removed once none does. Any other fence without a Service
(one whose Service the watch has not brought yet) keeps its tombstone in memory until a Service
of that name shows.

Before, the tombstone was the annotation `lazyload.io/fence-deleted` on the Service, which needed
cluster-wide `patch services`. `migrate` (at start, read-only): when the ConfigMap does not exist
yet, it is created with the tombstones those annotations hold; the annotations stay, unused.

Called by `reconciling` under the fence's lock; writes go through `applying`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import NamedTuple

from lazyload_fence_reconciler import applying, fences, policies, watching

log = logging.getLogger(__name__)
Key = tuple[str, str]
MAX_ENTRY_KEY = 253
"""The longest ConfigMap key Kubernetes accepts."""
MIGRATE_WAIT_STEPS = 200
"""50 ms steps `migrate` waits at most for the watch to bring the ConfigMap it created (10 s)."""


class Entry(NamedTuple):
    """One persisted tombstone."""

    at: str
    label: str
    uid: str


def entry_key(key: Key) -> str:
    """The ConfigMap key of fence `key`: namespaces hold no `_`, so the first one splits it."""
    return f"{key[0]}_{key[1]}"


def entry_value(at: float, label: str, uid: str) -> str:
    return f"{fences.format_time(at)};serviceFenced={label};uid={uid}"


def parse_entry(value: str) -> Entry:
    """An entry's fields (missing ones empty; a label holds no `;`)."""
    at, _, rest = value.partition(";")
    fields: dict[str, str] = {}
    for part in rest.split(";"):
        name, _, field = part.partition("=")
        fields[name] = field
    return Entry(at=at, label=fields.get("serviceFenced", ""), uid=fields.get("uid", ""))


class Tombstones:
    """The tombstones this replica knows, backed by the tombstones' ConfigMap."""

    def __init__(
        self,
        cluster: watching.Cluster,
        applier: applying.Applier,
        clock: Callable[[], float],
        workload_pods: Callable[[Key], int | None] = lambda key: None,
    ) -> None:
        self.cluster, self.applier, self.clock = cluster, applier, clock
        self.workload_pods = workload_pods
        """Fence name -> how many pods carry its workload's label; None for a fence that is no
        workload fence."""
        self._memory: dict[Key, tuple[str, str]] = {}
        """Key -> the Service's serviceFenced label and uid ("": none) when the manual fence was
        deleted."""
        self._to_persist: set[Key] = set()

    def add(self, key: Key) -> None:
        """A manual fence was deleted (watch event): remember, persist at the next refresh."""
        self._memory[key] = (self._fenced_label(key), self.cluster.service_uid(key) or "")
        self._to_persist.add(key)

    def discard(self, key: Key) -> None:
        """A fence of that name exists (watch event)."""
        self._memory.pop(key, None)
        self._to_persist.discard(key)

    def recorded(self, key: Key) -> str | None:
        """The label recorded at deletion; None when `key` has no tombstone."""
        if key in self._memory:
            label, uid = self._memory[key]
            if self.workload_pods(key) == 0:
                return None  # the workload is gone: its tombstone with it
            return label if not uid or uid == self.cluster.service_uid(key) else None
        entry = self._stored(key)
        return entry.label if entry is not None and self._valid(key, entry) else None

    def holds(self, key: Key) -> bool:
        """Whether `key` must not be (re)created automatically."""
        recorded = self.recorded(key)
        if recorded is None:
            return False
        relabelled = self._fenced_label(key).strip().lower() == "true"
        return not relabelled or recorded.strip().lower() == "true"

    def keys(self) -> list[Key]:
        """The fences the ConfigMap holds entries for (so a start-up resync refreshes each)."""
        found = []
        for entry in self.cluster.tombstone_entries() or {}:
            namespace, _, name = entry.partition("_")
            if namespace and name:
                found.append((namespace, name))
        return found

    async def refresh(self, key: Key, *, exists: bool) -> None:
        """Persist a new tombstone, follow the label, or clear the tombstone."""
        remembered = self._memory.get(key)
        if remembered and remembered[1] and remembered[1] != self.cluster.service_uid(key):
            self.discard(key)  # its Service is gone or new: the tombstone died with it
        if remembered and self.workload_pods(key) == 0:
            self.discard(key)  # its workload has no pod left: the tombstone died with it
        stored = self._stored(key)
        if stored is not None and not self._valid(key, stored):
            await self.applier.mark_tombstone(entry_key(key), None)
            log.info("dropped the tombstone of %s/%s: its Service or workload is gone", *key)
            stored = None
        recorded = self.recorded(key)
        if key in self._to_persist and not exists:
            if self._owner_exists(key):  # else when its Service shows up
                self._to_persist.discard(key)
                await self._persist(key, self._memory.get(key, ("", ""))[0])
        elif recorded is None:
            return
        elif exists or not self.holds(key):
            self._memory.pop(key, None)
            if stored is not None:
                await self.applier.mark_tombstone(entry_key(key), None)
                log.info("cleared the tombstone of the manual fence %s/%s", *key)
        elif recorded != (label := self._fenced_label(key)):
            self._memory[key] = (label, self.cluster.service_uid(key) or "")
            await self._persist(key, label)

    async def migrate(self) -> None:
        """Create the ConfigMap with the tombstones of Services' `lazyload.io/fence-deleted`
        annotations (the previous store), when it does not exist yet (call once synced)."""
        if self.cluster.tombstone_entries() is not None:
            return
        entries = {}
        for key in self.cluster.service_keys():
            service = self.cluster.service(key)
            value = service.annotations.get(fences.TOMBSTONE_ANNOTATION) if service else None
            uid = self.cluster.service_uid(key)
            if value is None or uid is None or len(entry_key(key)) > MAX_ENTRY_KEY:
                continue
            at = value.partition(";")[0]
            label = fences.tombstone_label(value)
            entries[entry_key(key)] = f"{at};serviceFenced={label};uid={uid}"
        if entries and await self.applier.create_tombstones(entries):
            log.info("moved %d tombstones from Service annotations to the ConfigMap", len(entries))
            # decisions read the watched copy: wait for it before the first edge is decided on
            for _ in range(MIGRATE_WAIT_STEPS):
                if self.cluster.tombstone_entries() is not None:
                    break
                await asyncio.sleep(0.05)

    def _stored(self, key: Key) -> Entry | None:
        value = (self.cluster.tombstone_entries() or {}).get(entry_key(key))
        return None if value is None else parse_entry(value)

    def _valid(self, key: Key, entry: Entry) -> bool:
        """Whether what the entry lives with still exists (a workload's entry has no uid)."""
        if not self._owner_exists(key):
            return False
        return not entry.uid or entry.uid == self.cluster.service_uid(key)

    def _owner_exists(self, key: Key) -> bool:
        """Whether what the tombstone lives with exists: the Service, or the workload's pods."""
        pods = self.workload_pods(key)
        return bool(pods) if pods is not None else self.cluster.service_uid(key) is not None

    def _fenced_label(self, key: Key) -> str:
        service = self.cluster.service(key)
        return (service.labels if service else {}).get(policies.FENCED_LABEL, "")

    async def _persist(self, key: Key, label: str) -> None:
        uid = self.cluster.service_uid(key) or ""  # "": a workload fence, which has no Service
        if not self._owner_exists(key) or len(entry_key(key)) > MAX_ENTRY_KEY:
            return  # in memory only: it would die with its Service or workload
        value = entry_value(self.clock(), label, uid)
        if await self.applier.mark_tombstone(entry_key(key), value):
            log.info("manual fence %s/%s deleted: tombstone in the ConfigMap", *key)
