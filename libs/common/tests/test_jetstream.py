"""JetStream helpers against a real nats-server: idempotent streams, ack after the handler,
dead-lettering of undecodable and rejected messages, retry of failed ones, duplicate window."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from lazyload_common import codec, events, jetstream, subjects
from lazyload_common.settings import NatsSettings


def _edge(i: int, host: str = "") -> events.DependencyObserved:
    return events.DependencyObserved(
        source_namespace="default",
        source_name="a",
        destination_host=host or f"h{i}.default.svc.cluster.local",
        first_seen=float(i),
    )


def _spec(durable: str, **kw: object) -> jetstream.ConsumerSpec:
    return jetstream.ConsumerSpec(
        stream=subjects.DEPS_STREAM,
        durable=durable,
        filter_subject="lazyload.deps.>",
        service="test",
        model=events.DependencyObserved,
        **kw,  # type: ignore[arg-type]
    )


async def _settled(js: Any, durable: str) -> Any:
    """The consumer's info once no ack is outstanding (acks are sent without waiting for the
    server, which counts them a moment later), or as it is after 5 s."""
    info = await js.consumer_info(subjects.DEPS_STREAM, durable)
    for _ in range(100):
        if info.num_ack_pending == 0:
            break
        await asyncio.sleep(0.05)
        info = await js.consumer_info(subjects.DEPS_STREAM, durable)
    return info


@pytest.fixture
async def js(nats_url: str):  # type: ignore[no-untyped-def]
    nc = await jetstream.connect(NatsSettings(url=nats_url), name="test")
    context = nc.jetstream()
    await jetstream.ensure_streams(context)
    yield context
    await nc.close()


async def test_streams_are_idempotent(js) -> None:  # type: ignore[no-untyped-def]
    await jetstream.ensure_streams(js)
    info = await js.stream_info(subjects.DEPS_STREAM)
    assert info.config.subjects == ["lazyload.deps.>"]


async def test_consume_acks_rejects_and_retries(js) -> None:  # type: ignore[no-untyped-def]
    await jetstream.publish(js, subjects.deps("default", "a"), _edge(1))
    await js.publish(subjects.deps("default", "a"), b"\xc1garbage")
    await jetstream.publish(js, subjects.deps("default", "a"), _edge(2, host="bad.example.com"))
    await jetstream.publish(js, subjects.deps("default", "a"), _edge(3))
    seen: list[str] = []
    failed_once: set[str] = set()
    stop = asyncio.Event()

    async def handler(batch: list[jetstream.Delivery]) -> None:
        for d in batch:
            host = d.event.destination_host
            if host == "bad.example.com":
                d.reject("invalid host")
            elif host.startswith("h3") and host not in failed_once:
                failed_once.add(host)
                d.retry("not yet", delay=0.05)
            else:
                seen.append(host)
        if len(seen) >= 2:
            stop.set()

    spec = _spec("t")
    await asyncio.wait_for(jetstream.consume(js, spec, handler, stop), timeout=10)
    assert seen == ["h1.default.svc.cluster.local", "h3.default.svc.cluster.local"]
    dlq = await js.pull_subscribe("lazyload.dlq.test", durable="dlq", stream=subjects.DLQ_STREAM)
    letters = [codec.decode(m.data) for m in await dlq.fetch(2, timeout=2)]
    reasons = sorted(letter.reason.split(":")[0] for letter in letters)
    assert reasons == ["decode", "rejected"]
    info = await _settled(js, "t")
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_duplicate_window_collapses_same_msg_id(js) -> None:  # type: ignore[no-untyped-def]
    for _ in range(3):
        await jetstream.publish(js, subjects.deps("default", "a"), _edge(1), msg_id="edge-1")
    info = await js.stream_info(subjects.DEPS_STREAM)
    assert info.state.messages == 1


async def test_connect_waits_for_a_late_server(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from lazyload_testing.nats import start_nats_server

    with pytest.raises(TimeoutError):
        await jetstream.connect(
            NatsSettings(url="nats://127.0.0.1:1", connect_timeout=0.2), name="t", wait=0.5
        )
    server = start_nats_server(tmp_path / "n")
    try:
        nc = await jetstream.connect(NatsSettings(url=server.url), name="t")
        assert nc.is_connected
        await nc.close()
    finally:
        server.stop()


async def test_linger_coalesces_a_burst_into_one_batch(js) -> None:  # type: ignore[no-untyped-def]
    batches: list[int] = []
    stop = asyncio.Event()

    async def handler(batch: list[jetstream.Delivery]) -> None:
        batches.append(len(batch))
        if sum(batches) >= 30:
            stop.set()

    async def burst() -> None:
        for i in range(30):
            await jetstream.publish(js, subjects.deps("default", "a"), _edge(i))
            await asyncio.sleep(0.005)

    spec = _spec("linger", batch=4, linger=1.0)
    publisher = asyncio.create_task(burst())
    await asyncio.wait_for(jetstream.consume(js, spec, handler, stop), timeout=10)
    await publisher
    # Without lingering, batches of at most 4 would arrive; with it, the burst (well under the
    # window) comes as a single batch, or two if the first fetch raced the first publish.
    assert sum(batches) == 30 and len(batches) <= 2, batches


async def test_a_waiting_backlog_is_drained_into_one_batch(js) -> None:  # type: ignore[no-untyped-def]
    for i in range(50):
        await jetstream.publish(js, subjects.deps("default", "a"), _edge(i))
    batches: list[int] = []
    stop = asyncio.Event()

    async def handler(batch: list[jetstream.Delivery]) -> None:
        batches.append(len(batch))
        if sum(batches) >= 50:
            stop.set()

    spec = _spec("backlog", batch=8, linger=0.001, max_batch=40)
    await asyncio.wait_for(jetstream.consume(js, spec, handler, stop), timeout=10)
    # Fetches of 8 go on past the tiny window while full: 40 (max_batch), then the 10 left.
    assert batches == [40, 10], batches


async def test_pipeline_keeps_fetching_while_a_batch_waits(js) -> None:  # type: ignore[no-untyped-def]
    for i in range(12):
        await jetstream.publish(js, subjects.deps("default", "a"), _edge(i))
    release = asyncio.Event()
    in_hand: list[int] = []
    peak = 0
    settled: list[int] = []
    stop = asyncio.Event()

    async def handler(batch: list[jetstream.Delivery]) -> None:
        nonlocal peak
        in_hand.append(len(batch))
        peak = max(peak, len(in_hand))
        if len(in_hand) == 3:
            release.set()  # the third batch came while the first two still wait
        await release.wait()
        in_hand.pop()
        settled.append(len(batch))
        if sum(settled) >= 12:
            stop.set()

    await asyncio.wait_for(
        jetstream.consume(js, _spec("pipe", batch=4, pipeline=3), handler, stop), timeout=10
    )
    assert peak == 3 and sum(settled) == 12
    info = await _settled(js, "pipe")
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_without_pipeline_one_batch_at_a_time(js) -> None:  # type: ignore[no-untyped-def]
    for i in range(8):
        await jetstream.publish(js, subjects.deps("default", "a"), _edge(i))
    active = peak = done = 0
    stop = asyncio.Event()

    async def handler(batch: list[jetstream.Delivery]) -> None:
        nonlocal active, peak, done
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.05)
        active -= 1
        done += len(batch)
        if done >= 8:
            stop.set()

    await asyncio.wait_for(
        jetstream.consume(js, _spec("serial", batch=2), handler, stop), timeout=10
    )
    assert peak == 1 and done == 8


async def test_a_slow_batch_is_kept_alive_not_redelivered(js) -> None:  # type: ignore[no-untyped-def]
    await jetstream.publish(js, subjects.deps("default", "a"), _edge(1))
    deliveries: list[int] = []
    stop = asyncio.Event()

    async def handler(batch: list[jetstream.Delivery]) -> None:
        deliveries.extend(int(d.msg.metadata.num_delivered) for d in batch)
        await asyncio.sleep(2.5)  # well past ack_wait: only in_progress keeps it ours
        stop.set()

    await asyncio.wait_for(
        jetstream.consume(js, _spec("slow", ack_wait=1.0, pipeline=2), handler, stop), timeout=15
    )
    assert deliveries == [1]
    info = await _settled(js, "slow")
    assert info.num_redelivered == 0 and info.num_ack_pending == 0


async def test_an_existing_consumer_is_brought_to_the_spec(js) -> None:  # type: ignore[no-untyped-def]
    stop = asyncio.Event()
    stop.set()

    async def handler(batch: list[jetstream.Delivery]) -> None:
        raise AssertionError("nothing to consume")

    await jetstream.consume(js, _spec("upgraded", max_ack_pending=100), handler, stop)
    await jetstream.consume(js, _spec("upgraded", max_ack_pending=5000), handler, stop)
    info = await js.consumer_info(subjects.DEPS_STREAM, "upgraded")
    assert info.config.max_ack_pending == 5000


async def test_slim_keeps_what_settling_needs(js) -> None:  # type: ignore[no-untyped-def]
    sent = _edge(1)
    await jetstream.publish(js, subjects.deps("default", "a"), sent, msg_id="slim-1")
    stop = asyncio.Event()

    async def handler(batch: list[jetstream.Delivery]) -> None:
        for d in batch:
            d.slim()
            assert d.event is None and d.msg.headers is None and d.msg.data
            d.reject("invalid host")  # dead-lettering needs the payload
        stop.set()

    await asyncio.wait_for(jetstream.consume(js, _spec("slim"), handler, stop), timeout=10)
    dlq = await js.pull_subscribe(
        "lazyload.dlq.test", durable="dlq-slim", stream=subjects.DLQ_STREAM
    )
    letter = codec.decode((await dlq.fetch(1, timeout=2))[0].data)
    assert codec.decode_as(letter.payload, events.DependencyObserved) == sent


async def test_a_busy_server_at_start_is_waited_for(js) -> None:  # type: ignore[no-untyped-def]
    from nats.errors import TimeoutError as NatsTimeoutError

    class Busy:
        """The real JetStream context, whose first two consumer creations time out."""

        def __init__(self) -> None:
            self.refused = 0

        async def add_consumer(self, *args: object, **kwargs: object) -> object:
            if self.refused < 2:
                self.refused += 1
                raise NatsTimeoutError
            return await js.add_consumer(*args, **kwargs)

        def __getattr__(self, name: str) -> object:
            return getattr(js, name)

    await jetstream.publish(js, subjects.deps("default", "a"), _edge(1))
    stop = asyncio.Event()
    got: list[str] = []

    async def handler(batch: list[jetstream.Delivery]) -> None:
        got.extend(d.event.destination_host for d in batch)
        stop.set()

    busy = Busy()
    await asyncio.wait_for(jetstream.consume(busy, _spec("busy"), handler, stop), timeout=15)  # type: ignore[arg-type]
    assert busy.refused == 2 and got == ["h1.default.svc.cluster.local"]
