"""In-memory object storage with one global resourceVersion counter and a change history."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from .copying import clone
from .events import Change, EventLog, Key, Obj

Ref = tuple[Key, str, str]  # resource key, namespace, name


def owner_uids(obj: Obj) -> set[str]:
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return {r["uid"] for r in refs if isinstance(r, dict) and r.get("uid")}


def object_name(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata", {})
    return (meta.get("namespace") or "", meta["name"])


class Store:
    """All objects by resource key, then by (namespace, name).

    Stored dicts are never mutated in place: every write stores a fresh object, so
    the history and watchers can share them. Readers get deep copies.
    """

    def __init__(self, history_size: int) -> None:
        self._rv = 0
        self._objects: dict[Key, dict[tuple[str, str], Obj]] = {}
        self._uids: dict[str, Ref] = {}
        self._dependents: dict[str, set[Ref]] = {}  # owner uid -> objects naming it
        self.events = EventLog(history_size)

    def _index(self, key: Key, obj: Obj | None, add: bool) -> None:
        if obj is None:
            return
        ref = (key, *object_name(obj))
        uid = obj["metadata"].get("uid")
        if add:
            if uid:
                self._uids[uid] = ref
            for owner in owner_uids(obj):
                self._dependents.setdefault(owner, set()).add(ref)
            return
        if uid and self._uids.get(uid) == ref:
            del self._uids[uid]
        for owner in owner_uids(obj):
            refs = self._dependents.get(owner)
            if refs is not None:
                refs.discard(ref)
                if not refs:
                    del self._dependents[owner]

    def uid_exists(self, uid: str) -> bool:
        return uid in self._uids

    def dependents(self, uid: str) -> list[Ref]:
        """Objects whose ownerReferences name uid."""
        return sorted(self._dependents.get(uid, ()))

    @property
    def resource_version(self) -> int:
        return self._rv

    def get(self, key: Key, namespace: str, name: str) -> Obj | None:
        obj = self._objects.get(key, {}).get((namespace, name))
        return clone(obj) if obj is not None else None

    def exists(self, key: Key, namespace: str, name: str) -> bool:
        return (namespace, name) in self._objects.get(key, {})

    def list(self, key: Key, matches: Callable[[Obj], bool] | None = None) -> list[Obj]:
        items = sorted(self._objects.get(key, {}).items())
        return [clone(o) for _, o in items if matches is None or matches(o)]

    def iter_raw(self, key: Key) -> Iterator[Obj]:
        """Stored objects without copying (callers must not mutate them)."""
        yield from [o for _, o in sorted(self._objects.get(key, {}).items())]

    def resource_keys(self) -> list[Key]:
        return list(self._objects)

    def next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def put(self, key: Key, obj: Obj) -> Obj:
        """Store obj (ADDED or MODIFIED) under a new resourceVersion; returns a copy."""
        stored = clone(obj)
        stored["metadata"]["resourceVersion"] = self.next_rv()
        bucket = self._objects.setdefault(key, {})
        name = object_name(stored)
        old = bucket.get(name)
        bucket[name] = stored
        self._index(key, old, add=False)
        self._index(key, stored, add=True)
        change_type = "ADDED" if old is None else "MODIFIED"
        self.events.append(Change(self._rv, key, change_type, stored, old))
        return clone(stored)

    def delete(self, key: Key, namespace: str, name: str) -> Obj | None:
        """Remove an object; the DELETED event carries a new resourceVersion."""
        old = self._objects.get(key, {}).pop((namespace, name), None)
        if old is None:
            return None
        self._index(key, old, add=False)
        gone = clone(old)
        gone["metadata"]["resourceVersion"] = self.next_rv()
        self.events.append(Change(self._rv, key, "DELETED", gone, old))
        return clone(gone)

    def load(self, key: Key, obj: Obj) -> None:
        """Put a restored object back as-is (state files), keeping its resourceVersion."""
        bucket = self._objects.setdefault(key, {})
        self._index(key, bucket.get(object_name(obj)), add=False)
        bucket[object_name(obj)] = clone(obj)
        self._index(key, obj, add=True)
        self._rv = max(self._rv, int(obj["metadata"].get("resourceVersion") or 0))

    def clear(self) -> None:
        """Drop every object and the history; the counter keeps going up."""
        self._objects.clear()
        self._uids.clear()
        self._dependents.clear()
        self.events.close_all()
        self.events.clear(self._rv)
