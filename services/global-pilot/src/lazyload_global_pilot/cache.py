"""Per-node snapshot cache: who gets which snapshot, and a wake-up when that changes.

The server asks `get(node)` and awaits `watch(node, known_version)`; the wiring calls `set(...)`.
A node gets the snapshot set for its key (`node_hash(node)`, node.id by default) or else the
default snapshot, which is what every global-sidecar replica shares today. Setting a snapshot with
the version a node already has wakes nobody, so an unchanged render never reaches Envoy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from envoy.config.core.v3 import base_pb2

from lazyload_global_pilot.snapshots import Snapshot

NodeHash = Callable[[base_pb2.Node], str]


def id_hash(node: base_pb2.Node) -> str:
    """Key a node by its id (go-control-plane's IDHash)."""
    return node.id


class SnapshotCache:
    """Snapshots by node key, plus a default for every node without its own."""

    def __init__(self, node_hash: NodeHash = id_hash) -> None:
        self.node_hash = node_hash
        self._by_key: dict[str, Snapshot] = {}
        self._default: Snapshot | None = None
        self._changed = asyncio.Event()

    def set(self, snapshot: Snapshot, *, node_key: str | None = None) -> bool:
        """Check `snapshot` and set it for `node_key` (None: the default); True if it changed."""
        snapshot.consistent()
        current = self._default if node_key is None else self._by_key.get(node_key)
        if current is not None and current.version == snapshot.version:
            return False
        if node_key is None:
            self._default = snapshot
        else:
            self._by_key[node_key] = snapshot
        self._notify()
        return True

    def clear(self, node_key: str) -> None:
        """Forget the snapshot of `node_key`; the node falls back to the default."""
        if self._by_key.pop(node_key, None) is not None:
            self._notify()

    @property
    def default(self) -> Snapshot | None:
        """The snapshot of every node without its own."""
        return self._default

    def get(self, node: base_pb2.Node) -> Snapshot | None:
        """The snapshot `node` should have now, if any."""
        return self._by_key.get(self.node_hash(node), self._default)

    async def watch(self, node: base_pb2.Node, known_version: str | None) -> Snapshot:
        """Wait until `node`'s snapshot has a version other than `known_version`, and return it."""
        while True:
            changed = self._changed
            current = self.get(node)
            if current is not None and current.version != known_version:
                return current
            await changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
