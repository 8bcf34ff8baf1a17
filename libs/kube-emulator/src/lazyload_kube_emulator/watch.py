"""Watch streams: newline-delimited JSON events (or length-prefixed protobuf `WatchEvent`s for
clients that accept only protobuf), replay from a resourceVersion, bookmarks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from starlette.datastructures import QueryParams
from starlette.responses import StreamingResponse

from .errors import ApiError, bad_request
from .events import CLOSED, EXPIRED, Watcher, translate
from .kubeproto import MEDIA_TYPE as PROTOBUF
from .kubeproto import codec
from .objects import with_version
from .paths import Target
from .responses import dumps
from .selectors import build_filter
from .tables import to_table

if TYPE_CHECKING:
    from .emulator import Emulator

Obj = dict[str, Any]
TRUE = ("true", "1")
INITIAL_EVENTS_END = "k8s.io/initial-events-end"


def is_watch(query: QueryParams) -> bool:
    return query.get("watch", "").lower() in TRUE


def _line(event_type: str, obj: Obj) -> bytes:
    return dumps({"type": event_type, "object": obj}) + b"\n"


class WatchRequest:
    """The parsed query of one watch and how to render its events."""

    def __init__(
        self, emu: Emulator, target: Target, query: QueryParams, table: bool, protobuf: bool
    ) -> None:
        self.emu, self.target, self.table, self.protobuf = emu, target, table, protobuf
        self.matches: Callable[[Obj], bool] = build_filter(
            target.namespace, query.get("labelSelector"), query.get("fieldSelector")
        )
        self.resource_version = query.get("resourceVersion", "")
        if self.resource_version not in ("", "0") and not self.resource_version.isdigit():
            raise bad_request(f"invalid resourceVersion {self.resource_version!r}")
        timeout = query.get("timeoutSeconds", "")
        self.timeout = float(timeout) if timeout.isdigit() and int(timeout) > 0 else None
        self.bookmarks = query.get("allowWatchBookmarks", "").lower() in TRUE
        self.initial_events = query.get("sendInitialEvents", "").lower() in TRUE
        self.include = query.get("includeObject")

    def frame(self, event_type: str, obj: Obj) -> bytes:
        if self.protobuf:
            return codec().watch_frame(event_type, obj)
        return _line(event_type, obj)

    def render(self, event_type: str, obj: Obj) -> bytes:
        shown = with_version(self.target.info, self.target.version, obj)
        if self.table and event_type != "BOOKMARK":
            shown = to_table(self.target, shown, self.include)
        return self.frame(event_type, shown)

    def bookmark(self, annotations: dict[str, str] | None = None) -> bytes:
        info = self.target.info
        meta: Obj = {"resourceVersion": str(self.emu.store.resource_version)}
        if annotations:
            meta["annotations"] = annotations
        api_version = info.api_version(self.target.version)
        return self.frame(
            "BOOKMARK", {"kind": info.kind, "apiVersion": api_version, "metadata": meta}
        )

    def initial(self) -> list[tuple[str, Obj]]:
        """Events to send before live ones (raises 410 when the history is too short)."""
        key = self.target.info.key
        if self.initial_events or self.resource_version in ("", "0"):
            return [("ADDED", o) for o in self.emu.store.iter_raw(key) if self.matches(o)]
        changes = self.emu.store.events.since(int(self.resource_version), key)
        events = (translate(c, self.matches) for c in changes)
        return [e for e in events if e is not None]


async def _stream(request: WatchRequest) -> AsyncIterator[bytes]:
    emu = request.emu
    watcher = Watcher(request.target.info.key, request.matches)
    try:
        initial = request.initial()
    except ApiError as exc:
        yield request.frame("ERROR", exc.body())
        return
    emu.store.events.subscribe(watcher)
    try:
        for event_type, obj in initial:
            yield request.render(event_type, obj)
        if request.initial_events and request.bookmarks:
            yield request.bookmark({INITIAL_EVENTS_END: "true"})
        async for chunk in _live(request, watcher):
            yield chunk
    finally:
        emu.store.events.unsubscribe(watcher)


async def _live(request: WatchRequest, watcher: Watcher) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + request.timeout if request.timeout else None
    interval = request.emu.config.bookmark_interval if request.bookmarks else None
    while True:
        waits = [w for w in (interval, deadline and deadline - loop.time()) if w is not None]
        try:
            event_type, obj = await asyncio.wait_for(watcher.queue.get(), min(waits, default=None))
        except TimeoutError:
            if deadline is not None and loop.time() >= deadline:
                return
            yield request.bookmark()
            continue
        if event_type == CLOSED[0]:
            return
        if event_type == EXPIRED[0]:
            yield request.frame(event_type, obj)
            return
        yield request.render(event_type, obj)


def watch_response(
    emu: Emulator, target: Target, query: QueryParams, table: bool = False, protobuf: bool = False
):
    """A streaming 200 response of watch events for the target's collection."""
    request = WatchRequest(emu, target, query, table, protobuf)
    media_type = f"{PROTOBUF};stream=watch" if protobuf else "application/json"
    return StreamingResponse(_stream(request), media_type=media_type)
