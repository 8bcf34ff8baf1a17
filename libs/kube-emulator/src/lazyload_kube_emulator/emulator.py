"""The emulator's state: storage, served resources, IP allocation, faults and the request log."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from . import operations
from .config import EmulatorConfig
from .crds import crd_documents
from .errors import ApiError
from .events import Key
from .faults import FaultBook, RequestLog
from .ipalloc import IpAllocator
from .kinds import hooks_for
from .objects import now
from .paths import Target
from .registry import CRD_KEY, Registry
from .store import Store, owner_uids

log = logging.getLogger(__name__)
Obj = dict[str, Any]


class Emulator:
    """All in-memory state of one Kubernetes API emulator; used from one asyncio loop."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        self.registry = Registry()
        self.store = Store(self.config.history_size)
        self.ips = IpAllocator(self.config.service_cidr)
        self.faults = FaultBook()
        self.requests = RequestLog(self.config.request_log_size)
        self._bootstrap()

    def _bootstrap(self) -> None:
        for name in self.config.namespaces:
            self.ensure_namespace(name)
        self.apply_crd_dirs(self.config.crd_dirs)

    def target(self, key: Key, namespace: str | None = None, name: str | None = None) -> Target:
        info = self.registry.get(*key)
        if info is None:
            raise KeyError(f"resource {key} is not served")
        return Target(info, info.stored_version, namespace, name)

    def ensure_namespace(self, name: str) -> None:
        if not self.store.exists(("", "namespaces"), "", name):
            body = {"metadata": {"name": name}}
            operations.create(
                self, self.target(("", "namespaces")), body, operations.WriteOptions()
            )

    def apply(self, key: Key, obj: Obj) -> Obj:
        """Create obj, or replace the stored one of the same name (like `kubectl apply`)."""
        meta = obj.get("metadata") or {}
        info = self.registry.get(*key)
        if info is None:
            raise KeyError(f"no resource {key} is registered")
        namespace = meta.get("namespace") if info.namespaced else None
        opts = operations.WriteOptions()
        if self.store.exists(key, namespace or "", meta.get("name", "")):
            target = self.target(key, namespace, meta["name"])
            body = {**obj, "metadata": {k: v for k, v in meta.items() if k != "resourceVersion"}}
            return operations.replace(self, target, body, opts)
        return operations.create(self, self.target(key, namespace), obj, opts)

    def apply_crd_dirs(self, directories: Iterable[Path]) -> int:
        """Apply every CRD document found in the directories; returns how many."""
        count = 0
        for doc in crd_documents(directories):
            try:
                self.apply(CRD_KEY, doc)
            except ApiError as exc:
                raise ValueError(f"CRD {doc.get('metadata', {}).get('name')}: {exc}") from exc
            count += 1
        return count

    def remove(self, key: Key, namespace: str, name: str, orphan: bool = False) -> Obj | None:
        """Delete an object right away (no finalizers), run its kind's cleanup and collect its
        dependents (or, with `orphan`, only take its ownerReference off them)."""
        gone = self.store.delete(key, namespace, name)
        if gone is not None:
            hooks_for(key).after_delete(self, gone)
            self.collect_dependents(gone["metadata"].get("uid") or "", orphan)
        return gone

    def collect_dependents(self, owner_uid: str, orphan: bool = False) -> None:
        """The garbage collector's background deletion, done at once: every object whose
        ownerReferences name owner_uid is deleted (finalizers first mark it deleting) unless
        another of its owners still exists; then (or with `orphan`) the reference is dropped."""
        for dep_key, dep_ns, dep_name in self.store.dependents(owner_uid):
            obj = self.store.get(dep_key, dep_ns, dep_name)
            if obj is None or owner_uid not in owner_uids(obj):
                continue
            meta = obj["metadata"]
            others = [r for r in meta["ownerReferences"] if r.get("uid") != owner_uid]
            alive = any(self.store.uid_exists(r.get("uid", "")) for r in others)
            if orphan or alive:
                if others:
                    meta["ownerReferences"] = others
                else:
                    del meta["ownerReferences"]
                self.store.put(dep_key, obj)
            elif meta.get("finalizers"):
                if not meta.get("deletionTimestamp"):
                    meta["deletionTimestamp"] = now()
                    meta["deletionGracePeriodSeconds"] = 0
                    self.store.put(dep_key, obj)
            else:
                self.remove(dep_key, dep_ns, dep_name)

    def remove_matching(self, key: Key, matches: Callable[[Obj], bool] | None = None) -> int:
        """Delete every object of key that matches (all of them by default); returns how many."""
        doomed = [o["metadata"] for o in self.store.iter_raw(key) if matches is None or matches(o)]
        for meta in doomed:
            self.remove(key, meta.get("namespace") or "", meta["name"])
        return len(doomed)

    def reset(self) -> None:
        """Back to the start state: default namespaces and the configured CRDs only."""
        self.registry = Registry()
        self.store.clear()
        self.ips.reset()
        self.faults.clear()
        self.requests.clear()
        self._bootstrap()

    def snapshot(self) -> list[Obj]:
        """Every stored object, CRDs first (the order a restore needs)."""
        keys = sorted(
            self.store.resource_keys(), key=lambda k: (k != CRD_KEY, k != ("", "namespaces"), k)
        )
        return [dict(o) for key in keys for o in self.store.iter_raw(key)]

    def restore(self, objects: Iterable[Obj]) -> None:
        """Load objects saved by `snapshot` back as they were (resourceVersions included)."""
        for obj in objects:
            group, _, _version = obj["apiVersion"].rpartition("/")
            info = self._info_for_kind(group, obj["kind"])
            if info is None:
                log.warning("not restoring %s %s: kind not served", obj["kind"], obj["metadata"])
                continue
            self.store.load(info.key, obj)
            hooks_for(info.key).after_write(self, obj)

    def _info_for_kind(self, group: str, kind: str):
        return next((i for i in self.registry.all() if i.group == group and i.kind == kind), None)
