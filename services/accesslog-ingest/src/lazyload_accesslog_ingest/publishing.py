"""Edges -> JetStream: deduplicated, bounded in flight, buffered while NATS is away.

`offer` is called for every derived edge (synchronously, from the gRPC handlers): the
`EdgeMemory` decides whether it is new, a refresh, or a duplicate; a publishable edge is encoded
and queued in a bounded buffer (a full buffer drops it and counts it; it is offered again when
next seen). `run` sends the queue with at most `max_in_flight` unacked publishes, each carrying
`Nats-Msg-Id` = edge key + refresh-window index, so a retried publish (or another replica's) is
deduplicated by JetStream. Only an ack marks an edge published. While NATS is disconnected
nothing is sent and the buffer holds; a failed publish goes back to the front of the buffer and
sending pauses with a growing back-off. This module never parses access logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from lazyload_common import codec, events, subjects
from nats.errors import NoRespondersError
from nats.js import JetStreamContext
from nats.js.errors import NoStreamResponseError

from lazyload_accesslog_ingest import ingesting, metrics
from lazyload_accesslog_ingest.deduplicating import EdgeMemory, Verdict
from lazyload_accesslog_ingest.settings import PublishSettings

log = logging.getLogger(__name__)
MSG_ID_HEADER = "Nats-Msg-Id"


@dataclass(frozen=True, slots=True)
class _Item:
    key: str
    subject: str
    payload: bytes
    msg_id: str
    verdict: Verdict


class EdgePublisher:
    """Publishes admitted edges to `lazyload.deps.<ns>.<name>` and confirms them on ack."""

    def __init__(
        self,
        js: JetStreamContext,
        memory: EdgeMemory,
        settings: PublishSettings,
        *,
        connected: Callable[[], bool],
        ensure_stream: Callable[[], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.js = js
        self.memory = memory
        self.settings = settings
        self.connected = connected
        self.ensure_stream = ensure_stream
        self.clock = clock
        self._queue: deque[_Item] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(settings.max_in_flight)
        self._wakeup = asyncio.Event()
        self._failures = 0
        self._retry_at = 0.0

    @property
    def size(self) -> int:
        """Edges queued or in flight."""
        return len(self._queue) + len(self._tasks)

    def offer(self, event: events.DependencyObserved) -> Verdict | None:
        """Queue `event` if it is publishable; the verdict, or None when the buffer is full."""
        key, now = event.edge_key, self.clock()
        verdict = self.memory.admit(key, now)
        if verdict is Verdict.DUPLICATE:
            metrics.DUPLICATES.inc()
            return verdict
        return self._enqueue(event, key, verdict, now)

    def offer_all(self, sightings: Mapping[str, ingesting.Sighting], observed_at: float) -> None:
        """`offer` for the edges of one message (`Outcome.sightings`): deduplicated on their keys
        first, so only the edges to publish become events (the hot path)."""
        now = self.clock()
        admitted, duplicates = self.memory.admit_all(sightings, now)
        if duplicates:
            metrics.DUPLICATES.inc(duplicates)
        for key, verdict in admitted:
            proto, start = sightings[key]
            event = ingesting.Observed(proto, key, start, observed_at).event
            self._enqueue(event, key, verdict, now)

    def _enqueue(
        self, event: events.DependencyObserved, key: str, verdict: Verdict, now: float
    ) -> Verdict | None:
        if self.size >= self.settings.buffer_size:
            self.memory.release(key)
            metrics.BUFFER_OVERFLOW.inc()
            return None
        item = _Item(
            key=key,
            subject=subjects.deps(event.source_namespace, event.source_name),
            payload=codec.encode(event),
            msg_id=f"{key}#{self.memory.window(now)}",
            verdict=verdict,
        )
        self._queue.append(item)
        self._gauges()
        self._wakeup.set()
        return verdict

    async def run(self, stop: asyncio.Event) -> None:
        """Send until `stop`, then flush for up to `drain_timeout` seconds and drop the rest."""
        loop = asyncio.get_running_loop()
        stop_waiter = asyncio.ensure_future(stop.wait())
        stop_waiter.add_done_callback(lambda _: self._wakeup.set())
        try:
            await self._dispatch(stop.is_set)
            deadline = loop.time() + self.settings.drain_timeout
            await self._dispatch(lambda: self.size == 0 or loop.time() >= deadline)
        finally:
            stop_waiter.cancel()
            await self._abandon()

    async def _dispatch(self, done: Callable[[], bool]) -> None:
        loop = asyncio.get_running_loop()
        while not done():
            self._wakeup.clear()
            delay = self._retry_at - loop.time()
            if not self._queue or not self.connected() or delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), min(max(delay, 0.05), 0.2))
                continue
            await self._slots.acquire()
            if not self._queue:
                self._slots.release()
                continue
            self._spawn(self._queue.popleft())

    def _spawn(self, item: _Item) -> None:
        task = asyncio.ensure_future(self._publish(item))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()
        self._gauges()
        self._wakeup.set()

    async def _publish(self, item: _Item) -> None:
        try:
            await self.js.publish(
                item.subject,
                item.payload,
                timeout=self.settings.ack_timeout,
                headers={MSG_ID_HEADER: item.msg_id},
            )
        except asyncio.CancelledError:
            self.memory.release(item.key)
            raise
        except Exception as e:
            await self._failed(item, e)
        else:
            self.memory.confirm(item.key, self.clock())
            self._failures = 0
            metrics.PUBLISHED.labels(item.verdict.value).inc()

    async def _failed(self, item: _Item, error: Exception) -> None:
        metrics.PUBLISH_FAILURES.labels(type(error).__name__).inc()
        self._queue.appendleft(item)
        self._failures += 1
        backoff = min(self.settings.retry_backoff_max, 0.05 * 2 ** min(self._failures, 10))
        self._retry_at = asyncio.get_running_loop().time() + backoff
        if self._failures in (1, 10) or self._failures % 100 == 0:
            log.warning("publishing edges fails (%d in a row): %r", self._failures, error)
        if isinstance(error, NoRespondersError | NoStreamResponseError) and self.ensure_stream:
            try:
                await self.ensure_stream()
            except Exception as e:
                log.warning("could not re-create the dependency stream: %r", e)

    async def _abandon(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._queue:
            log.warning("dropping %d unpublished edges at shutdown", len(self._queue))
        for item in self._queue:
            self.memory.release(item.key)
        self._queue.clear()
        self._gauges()

    def _gauges(self) -> None:
        metrics.BUFFERED.set(self.size)
        metrics.MEMORY.set(len(self.memory))
