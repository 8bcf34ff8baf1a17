"""Edges -> JetStream: deduplicated, bounded in flight, buffered while NATS is away.

`offer` is called for every derived edge (synchronously, from the gRPC handlers): the
`EdgeMemory` decides whether it is new, a refresh, or a duplicate; a publishable edge is encoded
and queued in a bounded buffer (a full buffer drops it and counts it; it is offered again when
next seen). `run` sends the queue with at most `max_in_flight` unacked publishes, each carrying
`Nats-Msg-Id` = edge key + refresh-window index, so a retried publish (or another replica's) is
deduplicated by JetStream. Sends are pipelined: each is a core publish with a reply subject of
this publisher's inbox (JetStream's publish, without a task, future or wait per edge), the
PubAcks arrive on one subscription, and a publish without its ack after `ack_timeout` counts as
failed. Only an ack marks an edge published. While NATS is disconnected
nothing is sent and the buffer holds; a failed publish goes back to the front of the buffer and
sending pauses with a growing back-off. This module never parses access logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import NamedTuple

import nats.errors
from lazyload_common import codec, events, subjects
from nats.aio.client import NO_RESPONDERS_STATUS
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.js.api import Header
from nats.js.errors import APIError, NoStreamResponseError

from lazyload_accesslog_ingest import ingesting, metrics
from lazyload_accesslog_ingest.deduplicating import EdgeMemory, Verdict
from lazyload_accesslog_ingest.settings import PublishSettings

log = logging.getLogger(__name__)
MSG_ID_HEADER = "Nats-Msg-Id"


class _Item(NamedTuple):
    key: str
    subject: str
    payload: bytes
    msg_id: str
    verdict: Verdict


class EdgePublisher:
    """Publishes admitted edges to `lazyload.deps.<ns>.<name>` and confirms them on ack."""

    def __init__(
        self,
        nc: NATS,
        memory: EdgeMemory,
        settings: PublishSettings,
        *,
        connected: Callable[[], bool],
        ensure_stream: Callable[[], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.nc = nc
        self.memory = memory
        self.settings = settings
        self.connected = connected
        self.ensure_stream = ensure_stream
        self.clock = clock
        self._queue: deque[_Item] = deque()
        self._in_flight: dict[str, tuple[_Item, float]] = {}
        """Sent, waiting for the ack: reply subject -> (item, deadline on the loop's clock), in
        the order sent."""
        self._inbox = ""
        """Prefix of the reply subjects (`<inbox>.<n>`), subscribed to once (`_on_ack`)."""
        self._sent = 0
        self._ensuring: asyncio.Future[None] | None = None
        self._published = {v: metrics.PUBLISHED.labels(v.value) for v in Verdict}
        self._wakeup = asyncio.Event()
        self._failures = 0
        self._retry_at = 0.0

    @property
    def size(self) -> int:
        """Edges queued or in flight."""
        return len(self._queue) + len(self._in_flight)

    def offer(self, event: events.DependencyObserved) -> Verdict | None:
        """Queue `event` if it is publishable; the verdict, or None when the buffer is full."""
        key, now = event.edge_key, self.clock()
        verdict = self.memory.admit(key, now)
        if verdict is Verdict.DUPLICATE:
            metrics.DUPLICATES.inc()
            return verdict
        verdict_or_none = self._enqueue(event, key, codec.encode(event), verdict, now)
        self._queued()
        return verdict_or_none

    def offer_all(self, sightings: Mapping[str, ingesting.Sighting], observed_at: float) -> None:
        """`offer` for the edges of one message (`Outcome.sightings`): deduplicated on their keys
        first, so only the edges to publish become events (the hot path)."""
        now = self.clock()
        admitted, duplicates = self.memory.admit_all(sightings, now)
        if duplicates:
            metrics.DUPLICATES.inc(duplicates)
        for key, verdict in admitted:
            proto, start = sightings[key]  # the event: the prototype with this sighting's times
            payload = codec.encode_with(proto, **ingesting.sighting_times(start, observed_at))
            self._enqueue(proto, key, payload, verdict, now)
        if admitted:
            self._queued()

    def _enqueue(
        self,
        event: events.DependencyObserved,
        key: str,
        payload: bytes,
        verdict: Verdict,
        now: float,
    ) -> Verdict | None:
        if self.size >= self.settings.buffer_size:
            self.memory.release(key)
            metrics.BUFFER_OVERFLOW.inc()
            return None
        item = _Item(
            key=key,
            subject=subjects.deps(event.source_namespace, event.source_name),
            payload=payload,
            msg_id=self.memory.msg_id(key, now),
            verdict=verdict,
        )
        self._queue.append(item)
        return verdict

    def _queued(self) -> None:
        self._gauges()
        self._wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Send until `stop`, then flush for up to `drain_timeout` seconds and drop the rest."""
        loop = asyncio.get_running_loop()
        stop_waiter = asyncio.ensure_future(stop.wait())
        stop_waiter.add_done_callback(lambda _: self._wakeup.set())
        expiring = asyncio.ensure_future(self._expire_acks())
        try:
            await self._dispatch(stop.is_set)
            deadline = loop.time() + self.settings.drain_timeout
            await self._dispatch(lambda: self.size == 0 or loop.time() >= deadline)
        finally:
            stop_waiter.cancel()
            expiring.cancel()
            self._abandon()

    async def _dispatch(self, done: Callable[[], bool]) -> None:
        loop = asyncio.get_running_loop()
        queue, in_flight, limit = self._queue, self._in_flight, self.settings.max_in_flight
        while not done():
            self._wakeup.clear()
            delay = self._retry_at - loop.time()
            if not queue or len(in_flight) >= limit or not self.connected() or delay > 0:
                self._gauges()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), min(max(delay, 0.05), 0.2))
                continue
            # send what the in-flight limit allows, until a send fails
            while queue and len(in_flight) < limit and await self._send(queue.popleft()):
                pass

    async def _send(self, item: _Item) -> bool:
        """Publish `item` to JetStream without waiting for its ack (JetStream's publish: a core
        publish with a reply subject, where the stream answers with its PubAck; `_on_ack` gets it,
        `_expire_acks` gives up on it after `ack_timeout`). False when it could not be sent."""
        try:
            if not self._inbox:
                inbox = self.nc.new_inbox()
                await self.nc.subscribe(f"{inbox}.*", cb=self._on_ack)
                self._inbox = inbox
            self._sent += 1
            reply = f"{self._inbox}.{self._sent}"
            await self.nc.publish(
                item.subject, item.payload, reply=reply, headers={MSG_ID_HEADER: item.msg_id}
            )
        except Exception as e:  # the connection went away between the check and the send
            self._failed(item, e)
            return False
        self._in_flight[reply] = (
            item,
            asyncio.get_running_loop().time() + self.settings.ack_timeout,
        )
        return True

    async def _on_ack(self, msg: Msg) -> None:
        """JetStream's answer to one publish: a PubAck, an API error, or no responders (503: no
        stream holds the subject)."""
        waiting = self._in_flight.pop(msg.subject, None)
        if waiting is None:  # late: given up on already, and sent again (same Nats-Msg-Id)
            return
        item = waiting[0]
        if msg.headers and msg.headers.get(Header.STATUS) == NO_RESPONDERS_STATUS:
            self._failed(item, NoStreamResponseError())
        elif b'"error"' in msg.data:
            self._failed(item, _api_error(msg.data))
        else:
            self.memory.confirm(item.key, self.clock())
            self._failures = 0
            self._published[item.verdict].inc()
        self._wakeup.set()

    async def _expire_acks(self) -> None:
        """Fail the publishes whose ack is later than `ack_timeout` (oldest first: they are in
        send order), so that they are sent again."""
        loop = asyncio.get_running_loop()
        period = min(self.settings.ack_timeout / 4, 0.5)
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            expired = []
            for reply, (item, deadline) in self._in_flight.items():
                if deadline > now:
                    break
                expired.append((reply, item))
            for reply, item in reversed(expired):  # oldest back at the front of the queue
                del self._in_flight[reply]
                self._failed(item, nats.errors.TimeoutError())
            if expired:
                self._wakeup.set()

    def _failed(self, item: _Item, error: BaseException) -> None:
        metrics.PUBLISH_FAILURES.labels(type(error).__name__).inc()
        self._queue.appendleft(item)
        self._failures += 1
        backoff = min(self.settings.retry_backoff_max, 0.05 * 2 ** min(self._failures, 10))
        self._retry_at = asyncio.get_running_loop().time() + backoff
        if self._failures in (1, 10) or self._failures % 100 == 0:
            log.warning("publishing edges fails (%d in a row): %r", self._failures, error)
        if isinstance(error, NoRespondersError | NoStreamResponseError):
            self._recreate_stream()
        self._gauges()

    def _recreate_stream(self) -> None:
        """Re-create the dependency stream (once at a time) when publishes find none."""
        if self.ensure_stream is None or (self._ensuring is not None and not self._ensuring.done()):
            return

        async def ensure(ensure_stream: Callable[[], Awaitable[None]]) -> None:
            try:
                await ensure_stream()
            except Exception as e:
                log.warning("could not re-create the dependency stream: %r", e)

        self._ensuring = asyncio.ensure_future(ensure(self.ensure_stream))

    def _abandon(self) -> None:
        for item, _ in self._in_flight.values():
            self.memory.release(item.key)
        self._in_flight.clear()
        if self._ensuring is not None:
            self._ensuring.cancel()
        if self._queue:
            log.warning("dropping %d unpublished edges at shutdown", len(self._queue))
        for item in self._queue:
            self.memory.release(item.key)
        self._queue.clear()
        self._gauges()

    def _gauges(self) -> None:
        metrics.BUFFERED.set(self.size)
        metrics.MEMORY.set(len(self.memory))


def _api_error(data: bytes) -> Exception:
    """The error of a JetStream API answer (`{"error": {...}}`)."""
    try:
        APIError.from_error(json.loads(data)["error"])  # raises the error's own class
    except APIError as e:
        return e
    except Exception:  # not the JSON JetStream sends: still a failed publish
        pass
    return APIError(description=data[:200].decode(errors="replace"))
