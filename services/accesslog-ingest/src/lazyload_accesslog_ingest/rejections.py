"""A bounded record of recent rejections that name a caller, served on the admin API.

`lazyload explain` merges it with the fence-reconciler's decisions to say why a host is not in a
caller's Sidecar when ingest never published the edge (an authority that is no valid host, an IP
that is no ClusterIP, a request Envoy could not route...). `Ingestor` notes a rejection once per new
entry key (the derived result is cached), so noting costs nothing on the hot path of repeats.

Bounded: an LRU of at most `size` (reason, callers, host) entries, each with its first and last
time and a count. Memory only. `GET /api/v1/rejections[?namespace=&name=]` serves it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from fastapi import APIRouter

from lazyload_accesslog_ingest.records import Rejection


@dataclass
class Rejected:
    reason: str
    callers: tuple[str, ...]
    """`namespace/name` of each caller the entry's address or stream resolved to (may be empty)."""
    caller_ip: str
    host: str
    first_at: float
    last_at: float
    count: int = 1

    def as_dict(self) -> dict[str, Any]:
        """Every field, in order; the callers as a list, the times in RFC 3339."""
        return {
            **asdict(self),
            "callers": list(self.callers),
            "first_at": _rfc3339(self.first_at),
            "last_at": _rfc3339(self.last_at),
        }


class RecentRejections:
    """The last `size` distinct rejections (see the module docstring)."""

    def __init__(self, size: int = 512, clock: Callable[[], float] = time.time) -> None:
        self.size = size
        self.clock = clock
        self._entries: OrderedDict[tuple[str, tuple[str, ...], str, str], Rejected] = OrderedDict()

    def note(self, reason: Rejection, callers: tuple[str, ...], caller_ip: str, host: str) -> None:
        now = self.clock()
        host, caller_ip = host[:300], caller_ip[:64]
        key = (reason.value, callers, caller_ip, host)
        entry = self._entries.get(key)
        if entry is None:
            self._entries[key] = Rejected(reason.value, callers, caller_ip, host, now, now)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        else:
            entry.last_at, entry.count = now, entry.count + 1
            self._entries.move_to_end(key)

    def of(self, caller: str | None = None) -> list[Rejected]:
        """Every kept rejection (those naming `caller`, `namespace/name`, when given)."""
        return [e for e in self._entries.values() if caller is None or caller in e.callers]


def create_router(recent: RecentRejections) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["rejections"])

    @router.get("/rejections")
    async def rejections(namespace: str | None = None, name: str | None = None) -> dict[str, Any]:
        caller = f"{namespace}/{name}" if namespace and name else None
        return {
            "items": [e.as_dict() for e in recent.of(caller)],
            "limit": recent.size,
        }

    return router


def _rfc3339(unix: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix))
