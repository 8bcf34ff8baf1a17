"""The edge publisher against a real nats-server with JetStream.

- admitted edges land on `lazyload.deps.<ns>.<name>` with `Nats-Msg-Id` = edge key + window;
- duplicates are suppressed and counted; an edge is remembered only after the ack;
- after the refresh interval the edge is published again, with the next window's message id;
- many edges with `max_in_flight=1` all get through (bounded, not stuck);
- NATS down: edges are buffered (overflow past the buffer size is counted and dropped), and the
  buffer is flushed when the server is back; nothing is published twice;
- a deleted stream is re-created;
- a publish whose ack never comes (something else answers the subject and stays silent) fails
  after `ack_timeout`, is counted, and is sent again until it is acked;
- at shutdown the buffer is flushed while NATS is there.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from lazyload_accesslog_ingest.deduplicating import EdgeMemory, Verdict
from lazyload_accesslog_ingest.publishing import EdgePublisher
from lazyload_accesslog_ingest.settings import PublishSettings
from lazyload_common import events, jetstream, subjects
from lazyload_common.settings import NatsSettings
from lazyload_testing import ingest as t
from lazyload_testing.nats import NatsServer
from nats.aio.client import Client as NATS


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def edge(
    source: str = "productpage", dest: str = "details", port: int | None = 9080
) -> events.DependencyObserved:
    return events.DependencyObserved(
        source_namespace="default",
        source_name=source,
        destination_host=f"{dest}.default.svc.cluster.local",
        destination_port=port,
        destination_namespace="default",
        destination_service=dest,
        first_seen=1.0,
    )


class Harness:
    def __init__(
        self, nc: NATS, publisher: EdgePublisher, memory: EdgeMemory, clock: Clock
    ) -> None:
        self.nc, self.publisher, self.memory, self.clock = nc, publisher, memory, clock


@pytest.fixture
async def make_harness(nats_server: NatsServer) -> AsyncIterator[object]:
    running: list[tuple[NATS, asyncio.Event, asyncio.Task[None]]] = []

    async def make(**publish: object) -> Harness:
        nc = await jetstream.connect(
            NatsSettings(url=nats_server.url, connect_timeout=1.0), name="t"
        )
        js = nc.jetstream()

        async def ensure() -> None:
            await jetstream.ensure_streams(js, names=[subjects.DEPS_STREAM])

        await ensure()
        clock = Clock()
        memory = EdgeMemory(max_edges=1000, refresh_interval=300.0)
        settings = PublishSettings(**{"drain_timeout": 1.0, "ack_timeout": 1.0, **publish})
        publisher = EdgePublisher(
            nc,
            memory,
            settings,
            connected=lambda: nc.is_connected,
            ensure_stream=ensure,
            clock=clock,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(publisher.run(stop))
        running.append((nc, stop, task))
        return Harness(nc, publisher, memory, clock)

    yield make
    for nc, stop, task in running:
        stop.set()
        await asyncio.wait_for(task, 10)
        await nc.close()


async def test_publish_with_message_id(make_harness, observer: NATS) -> None:
    h: Harness = await make_harness()
    published = t.metric_value("lazyload_ingest_edges_published_total", {"verdict": "new"})
    duplicates = t.metric_value("lazyload_ingest_duplicates_suppressed_total")
    e = edge()
    assert h.publisher.offer(e) is Verdict.NEW
    assert h.publisher.offer(e) is Verdict.DUPLICATE  # pending
    await t.eventually(lambda: len(h.memory) == 1, what="ack")
    assert h.publisher.offer(edge()) is Verdict.DUPLICATE  # published
    [msg] = await t.read_dependency_events(observer)
    assert msg.subject == "lazyload.deps.default.productpage"
    assert msg.event == e
    assert msg.msg_id == f"{e.edge_key}#{1_700_000_000 // 300}"
    assert (
        t.metric_value("lazyload_ingest_edges_published_total", {"verdict": "new"}) == published + 1
    )
    assert t.metric_value("lazyload_ingest_duplicates_suppressed_total") == duplicates + 2


async def test_refresh_after_interval(make_harness, observer: NATS) -> None:
    h: Harness = await make_harness()
    h.publisher.offer(edge())
    await t.eventually(lambda: len(h.memory) == 1 and h.memory.pending == 0)
    h.clock.now += 299
    assert h.publisher.offer(edge()) is Verdict.DUPLICATE
    h.clock.now += 1
    assert h.publisher.offer(edge()) is Verdict.REFRESH
    await t.eventually(lambda: h.memory.pending == 0)
    msgs = await t.read_dependency_events(observer)
    assert len(msgs) == 2
    assert msgs[0].msg_id != msgs[1].msg_id


async def test_many_edges_with_one_in_flight(make_harness, observer: NATS) -> None:
    h: Harness = await make_harness(max_in_flight=1)
    for i in range(200):
        h.publisher.offer(edge(dest=f"svc-{i}"))
    await t.eventually(lambda: len(h.memory) == 200, what="200 acks")
    assert len(await t.read_dependency_events(observer)) == 200


async def test_buffer_while_nats_is_down(
    make_harness,
    nats_server: NatsServer,
    observer: NATS,
) -> None:
    h: Harness = await make_harness(buffer_size=5)
    h.publisher.offer(edge(dest="before"))
    await t.eventually(lambda: len(h.memory) == 1)
    overflow = t.metric_value("lazyload_ingest_buffer_overflow_total")
    await asyncio.to_thread(nats_server.stop)
    await t.eventually(lambda: not h.nc.is_connected, what="disconnect")
    verdicts = [h.publisher.offer(edge(dest=f"while-down-{i}")) for i in range(7)]
    assert verdicts == [Verdict.NEW] * 5 + [None, None]
    assert t.metric_value("lazyload_ingest_buffer_overflow_total") == overflow + 2
    assert t.metric_value("lazyload_ingest_buffer_edges") == 5
    await asyncio.to_thread(nats_server.restart)
    await t.eventually(lambda: len(h.memory) == 6, timeout=20, what="flush after restart")
    # the dropped ones are offered again when next seen
    assert h.publisher.offer(edge(dest="while-down-6")) is Verdict.NEW
    await t.eventually(lambda: len(h.memory) == 7, timeout=10)
    await t.eventually(lambda: observer.is_connected, timeout=10)
    hosts = [
        m.event.destination_host.split(".")[0] for m in await t.read_dependency_events(observer)
    ]
    assert sorted(hosts) == sorted(
        ["before", *(f"while-down-{i}" for i in range(5)), "while-down-6"]
    )


async def test_stream_is_recreated(make_harness, observer: NATS) -> None:
    h: Harness = await make_harness()
    await observer.jetstream().delete_stream(subjects.DEPS_STREAM)
    h.publisher.offer(edge())
    await t.eventually(lambda: len(h.memory) == 1, what="publish after re-creating the stream")
    assert len(await t.read_dependency_events(observer)) == 1


async def test_a_publish_without_ack_is_sent_again(make_harness, observer: NATS) -> None:
    h: Harness = await make_harness(ack_timeout=0.4, retry_backoff_max=0.2)
    await observer.jetstream().delete_stream(subjects.DEPS_STREAM)
    silent = await observer.subscribe(f"{subjects.DEPS_PREFIX}.>")  # a responder that never acks
    await observer.flush()
    label = {"error": "TimeoutError"}
    timeouts = t.metric_value("lazyload_ingest_publish_failures_total", label)
    h.publisher.offer(edge())
    await t.eventually(
        lambda: t.metric_value("lazyload_ingest_publish_failures_total", label) > timeouts,
        what="the publish given up after ack_timeout",
    )
    assert len(h.memory) == 0 and h.publisher.size == 1  # not published, still held
    await silent.unsubscribe()  # now no responders: the stream is re-created, the edge resent
    await t.eventually(lambda: len(h.memory) == 1, what="published once the stream is back")
    assert h.publisher.size == 0
    assert len(await t.read_dependency_events(observer)) == 1


async def test_flush_at_shutdown(nats_server: NatsServer, observer: NATS) -> None:
    nc = await jetstream.connect(NatsSettings(url=nats_server.url), name="t")
    js = nc.jetstream()
    await jetstream.ensure_streams(js, names=[subjects.DEPS_STREAM])
    memory = EdgeMemory(max_edges=100, refresh_interval=300)
    publisher = EdgePublisher(
        nc, memory, PublishSettings(drain_timeout=5.0), connected=lambda: nc.is_connected
    )
    for i in range(20):
        publisher.offer(edge(dest=f"s{i}"))
    stop = asyncio.Event()
    stop.set()  # stop at once: everything queued is still flushed
    await publisher.run(stop)
    assert len(memory) == 20 and publisher.size == 0
    assert len(await t.read_dependency_events(observer)) == 20
    await nc.close()
