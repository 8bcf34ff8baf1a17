"""ADS server (state of the world) over grpc.aio: the protocol, and nothing about Kubernetes.

Per stream it remembers, for each type URL, the names Envoy asked for and the version and nonce
it last sent. A request is answered when the stream has not been sent the snapshot's version of
that type yet, or asks for names it was not sent; an ACK (same nonce, no error) is answered by
nothing; a NACK is logged and counted and nothing is re-sent until a new snapshot (Envoy keeps
its last good config). A request carrying a stale nonce is ignored. When the cache gets a new
snapshot, every subscribed type whose version changed is pushed, clusters before endpoints before
listeners before routes. EDS and RDS answers hold only the requested names.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2

from lazyload_global_pilot import resources
from lazyload_global_pilot.cache import SnapshotCache
from lazyload_global_pilot.snapshots import Snapshot

log = logging.getLogger(__name__)
Request = discovery_pb2.DiscoveryRequest
Response = discovery_pb2.DiscoveryResponse


@dataclass(frozen=True, slots=True)
class Hooks:
    """Optional callbacks on the stream lifecycle (metrics, logs). They must not raise."""

    on_stream_open: Callable[[int], None] | None = None
    on_stream_closed: Callable[[int, base_pb2.Node | None], None] | None = None
    on_request: Callable[[int, Request], None] | None = None
    on_response: Callable[[int, Response], None] | None = None


@dataclass(slots=True)
class Stats:
    """Counters the admin app and the tests read."""

    streams_open: int = 0
    requests: int = 0
    responses: int = 0
    acks: int = 0
    nacks: int = 0


@dataclass(slots=True)
class _TypeState:
    names: frozenset[str] = frozenset()
    sent_version: str | None = None
    sent_names: frozenset[str] = frozenset()
    nonce: str = ""


@dataclass(slots=True)
class _Stream:
    id: int
    node: base_pb2.Node | None = None
    snapshot: Snapshot | None = None
    types: dict[str, _TypeState] = field(default_factory=dict)


class AdsServer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """StreamAggregatedResources over a `SnapshotCache`."""

    def __init__(self, cache: SnapshotCache, *, hooks: Hooks | None = None) -> None:
        self.cache = cache
        self.hooks = hooks or Hooks()
        self.stats = Stats()
        self._stream_ids = itertools.count(1)
        self._nonces = itertools.count(1)

    async def StreamAggregatedResources(
        self, request_iterator: AsyncIterator[Request], context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        await self.serve_stream(request_iterator, context.write)

    async def serve_stream(
        self, requests: AsyncIterator[Request], send: Callable[[Response], Awaitable[None]]
    ) -> None:
        """Run one ADS stream until the client closes it (or the call is cancelled)."""
        stream = _Stream(id=next(self._stream_ids))
        self.stats.streams_open += 1
        self._call(self.hooks.on_stream_open, stream.id)
        reading: asyncio.Future[Request] = asyncio.ensure_future(anext(requests))
        watching: asyncio.Future[Snapshot] | None = None
        try:
            while True:
                pending = {reading} if watching is None else {reading, watching}
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if reading in done:
                    try:
                        request = reading.result()
                    except StopAsyncIteration:
                        return
                    reading = asyncio.ensure_future(anext(requests))
                    for response in self._on_request(stream, request):
                        await send(response)
                if watching is not None and watching in done:
                    stream.snapshot = watching.result()
                    watching = None
                    for response in self._on_snapshot(stream):
                        await send(response)
                if watching is None and stream.node is not None:
                    known = stream.snapshot.version if stream.snapshot is not None else None
                    watching = asyncio.ensure_future(self.cache.watch(stream.node, known))
        finally:
            for future in (reading, watching):
                if future is not None:
                    future.cancel()
                    with contextlib.suppress(BaseException):
                        await future
            self.stats.streams_open -= 1
            self._call(self.hooks.on_stream_closed, stream.id, stream.node)

    def _on_request(self, stream: _Stream, request: Request) -> list[Response]:
        self.stats.requests += 1
        if stream.node is None:
            stream.node = request.node if request.HasField("node") else base_pb2.Node()
            stream.snapshot = self.cache.get(stream.node)
        self._call(self.hooks.on_request, stream.id, request)
        state = stream.types.setdefault(request.type_url, _TypeState())
        if request.response_nonce and request.response_nonce != state.nonce:
            return []  # answers a response we have superseded since
        state.names = frozenset(request.resource_names)
        if request.HasField("error_detail"):
            self.stats.nacks += 1
            log.warning(
                "stream %d: Envoy %s rejected %s version %s: %s",
                stream.id,
                stream.node.id,
                request.type_url.rsplit(".", 1)[-1],
                state.sent_version,
                request.error_detail.message,
            )
            return []
        if request.response_nonce:
            self.stats.acks += 1
        if stream.snapshot is None:
            return []
        version = stream.snapshot.version_of(request.type_url)
        unsent = (
            not _wildcard(request.type_url, state.names) and not state.names <= state.sent_names
        )
        if state.sent_version != version or request.version_info != version or unsent:
            return [self._respond(stream, request.type_url)]
        return []

    def _on_snapshot(self, stream: _Stream) -> list[Response]:
        assert stream.snapshot is not None
        return [
            self._respond(stream, type_url)
            for type_url in sorted(stream.types, key=resources.push_rank)
            if stream.types[type_url].sent_version != stream.snapshot.version_of(type_url)
        ]

    def _respond(self, stream: _Stream, type_url: str) -> Response:
        assert stream.snapshot is not None
        state = stream.types[type_url]
        names = None if _wildcard(type_url, state.names) else state.names
        content = stream.snapshot.get(type_url, names)
        response = Response(
            version_info=stream.snapshot.version_of(type_url),
            type_url=type_url,
            nonce=str(next(self._nonces)),
            resources=[_pack(message) for message in content.values()],
        )
        state.sent_version, state.nonce = response.version_info, response.nonce
        state.sent_names = frozenset(content) if names is None else names
        self.stats.responses += 1
        self._call(self.hooks.on_response, stream.id, response)
        return response

    def _call(self, hook: Callable[..., None] | None, *args: Any) -> None:
        if hook is None:
            return
        try:
            hook(*args)
        except Exception:
            log.exception("xDS hook %s failed", getattr(hook, "__name__", hook))


def _wildcard(type_url: str, names: frozenset[str]) -> bool:
    return "*" in names or (not names and type_url in resources.WILDCARD_TYPES)


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


async def start(servicer: AdsServer, host: str, port: int) -> tuple[grpc.aio.Server, int]:
    """Serve `servicer` on `host:port` (0 = a free port); return the server and the bound port."""
    server = grpc.aio.server(options=[("grpc.max_send_message_length", 64 * 1024 * 1024)])
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(servicer, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind the xDS server to {host}:{port}")
    await server.start()
    return server, bound
