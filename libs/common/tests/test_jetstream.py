"""JetStream helpers against a real nats-server: idempotent streams, ack after the handler,
dead-lettering of undecodable and rejected messages, retry of failed ones, duplicate window."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
from lazyload_common import codec, events, jetstream, subjects
from lazyload_common.settings import NatsSettings
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import ConsumerConfig, ConsumerInfo
from nats.js.client import JetStreamContext
from prometheus_client import REGISTRY


def _edge(i: int, host: str = "") -> events.DependencyObserved:
    return events.DependencyObserved(
        source_namespace="default",
        source_name="a",
        destination_host=host or f"h{i}.default.svc.cluster.local",
        first_seen=float(i),
    )


def _spec(durable: str, **kw: Any) -> jetstream.ConsumerSpec:
    return jetstream.ConsumerSpec(
        stream=subjects.DEPS_STREAM,
        durable=durable,
        filter_subject="lazyload.deps.>",
        service="test",
        model=events.DependencyObserved,
        **kw,
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
async def js(nats_url: str) -> AsyncIterator[JetStreamContext]:
    nc = await jetstream.connect(NatsSettings(url=nats_url), name="test")
    context = nc.jetstream()
    await jetstream.ensure_streams(context)
    yield context
    await nc.close()


async def test_streams_are_idempotent(js) -> None:
    await jetstream.ensure_streams(js)
    info = await js.stream_info(subjects.DEPS_STREAM)
    assert info.config.subjects == ["lazyload.deps.>"]
    assert info.config.max_bytes == jetstream.GIB  # a full disk cannot stop the publishers


async def test_ensure_streams_keeps_the_limits_an_operator_tuned(js) -> None:
    await jetstream.ensure_streams(js)
    tuned = (await js.stream_info(subjects.DEPS_STREAM)).config
    tuned.max_age, tuned.max_bytes = 3600.0, 64 * 1024 * 1024
    await js.update_stream(tuned)
    await jetstream.ensure_streams(js)  # a service restarts
    after = (await js.stream_info(subjects.DEPS_STREAM)).config
    assert (after.max_age, after.max_bytes) == (3600.0, 64 * 1024 * 1024)
    assert after.subjects == ["lazyload.deps.>"]


async def test_consume_acks_rejects_and_retries(js) -> None:
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
    letters = await _dead_letters(js, "dlq", 2, timeout=2)
    reasons = sorted(letter.reason.split(":")[0] for letter in letters)
    assert reasons == ["decode", "rejected"]
    info = await _settled(js, "t")
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_duplicate_window_collapses_same_msg_id(js) -> None:
    for _ in range(3):
        await jetstream.publish(js, subjects.deps("default", "a"), _edge(1), msg_id="edge-1")
    info = await js.stream_info(subjects.DEPS_STREAM)
    assert info.state.messages == 1


async def test_connect_waits_for_a_late_server(tmp_path) -> None:
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


def _batch_sizes(until: int) -> tuple[list[int], asyncio.Event, jetstream.BatchHandler]:
    """A handler that notes the size of each batch, and the event it sets once `until`
    messages came."""
    batches: list[int] = []
    stop = asyncio.Event()

    async def handler(batch: list[jetstream.Delivery]) -> None:
        batches.append(len(batch))
        if sum(batches) >= until:
            stop.set()

    return batches, stop, handler


async def test_linger_coalesces_a_burst_into_one_batch(js) -> None:
    batches, stop, handler = _batch_sizes(until=30)

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


async def test_a_waiting_backlog_is_drained_into_one_batch(js) -> None:
    for i in range(50):
        await jetstream.publish(js, subjects.deps("default", "a"), _edge(i))
    batches, stop, handler = _batch_sizes(until=50)

    spec = _spec("backlog", batch=8, linger=0.001, max_batch=40)
    await asyncio.wait_for(jetstream.consume(js, spec, handler, stop), timeout=10)
    # Fetches of 8 go on past the tiny window while full: 40 (max_batch), then the 10 left.
    assert batches == [40, 10], batches


async def test_pipeline_keeps_fetching_while_a_batch_waits(js) -> None:
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


async def test_without_pipeline_one_batch_at_a_time(js) -> None:
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


async def test_a_slow_batch_is_kept_alive_not_redelivered(js) -> None:
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


async def test_an_existing_consumer_is_brought_to_the_spec(js) -> None:
    stop = asyncio.Event()
    stop.set()

    async def handler(batch: list[jetstream.Delivery]) -> None:
        raise AssertionError("nothing to consume")

    await jetstream.consume(js, _spec("upgraded", max_ack_pending=100), handler, stop)
    await jetstream.consume(js, _spec("upgraded", max_ack_pending=5000), handler, stop)
    info = await js.consumer_info(subjects.DEPS_STREAM, "upgraded")
    assert info.config.max_ack_pending == 5000


async def test_slim_keeps_what_settling_needs(js) -> None:
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
    letter = await _dead_letter(js, "dlq-slim", timeout=2)
    assert codec.decode_as(letter.payload, events.DependencyObserved) == sent


async def test_a_busy_server_at_start_is_waited_for(js, nats_url: str) -> None:
    class Busy(JetStreamContext):
        """A real JetStream context whose first two consumer creations time out."""

        refused = 0

        async def add_consumer(
            self,
            stream: str,
            config: ConsumerConfig | None = None,
            timeout: float | None = None,
            **params: Any,
        ) -> ConsumerInfo:
            if self.refused < 2:
                self.refused += 1
                raise NatsTimeoutError
            return await super().add_consumer(stream, config, timeout, **params)

    await jetstream.publish(js, subjects.deps("default", "a"), _edge(1))
    stop = asyncio.Event()
    got: list[str] = []

    async def handler(batch: list[jetstream.Delivery]) -> None:
        got.extend(d.event.destination_host for d in batch)
        stop.set()

    nc = await jetstream.connect(NatsSettings(url=nats_url), name="busy")
    busy = Busy(nc)
    try:
        await asyncio.wait_for(jetstream.consume(busy, _spec("busy"), handler, stop), timeout=15)
    finally:
        await nc.close()
    assert busy.refused == 2 and got == ["h1.default.svc.cluster.local"]


async def _until(check: Any, timeout: float = 10.0) -> None:
    """Poll `check()` (a coroutine function) until it is true."""
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)


async def test_a_deleted_consumer_or_stream_is_set_up_again(js) -> None:
    """An operator deletes the consumer, then the whole stream: `fetch` fails with a JetStream
    API error (503), which used to end the loop (and the service, with exit code 0). The loop
    creates both again and goes on (#19)."""
    seen: list[str] = []
    stop = asyncio.Event()

    async def handler(batch: list[jetstream.Delivery]) -> None:
        seen.extend(d.event.destination_host for d in batch)

    recoveries = _recoveries("lost")
    consuming = asyncio.create_task(jetstream.consume(js, _spec("lost"), handler, stop))
    try:
        await jetstream.publish(js, subjects.deps("default", "a"), _edge(1))
        await _until(lambda: _async(bool(seen)))
        await js.delete_consumer(subjects.DEPS_STREAM, "lost")
        await jetstream.publish(js, subjects.deps("default", "a"), _edge(2))
        await _until(lambda: _async("h2.default.svc.cluster.local" in seen))
        await js.delete_stream(subjects.DEPS_STREAM)

        async def consumer_back() -> bool:
            try:
                await js.consumer_info(subjects.DEPS_STREAM, "lost")
            except Exception:
                return False
            return True

        await _until(consumer_back)
        await jetstream.publish(js, subjects.deps("default", "a"), _edge(3))
        await _until(lambda: _async("h3.default.svc.cluster.local" in seen))
        assert not consuming.done()
        info = await js.stream_info(subjects.DEPS_STREAM)
        expected = jetstream.STREAM_DEFAULTS[subjects.DEPS_STREAM]
        assert info.config.subjects == ["lazyload.deps.>"]
        assert info.config.max_age == expected["max_age"]
        assert _recoveries("lost") >= recoveries + 2
    finally:
        stop.set()
        await asyncio.wait_for(consuming, timeout=10)


async def test_a_deleted_consumer_restarts_past_its_ack_floor(js) -> None:
    """A consumer deleted after it acked its messages is created again from just past its ack
    floor: the new message arrives, the acked ones are not delivered again (`make faults`: a
    consumer re-created to deliver all replayed the whole stream, 20 s of blocked learning)."""
    seen: list[str] = []
    stop = asyncio.Event()

    async def handler(batch: list[jetstream.Delivery]) -> None:
        seen.extend(d.event.destination_host for d in batch)

    spec = _spec("floor", floor_interval=0.1)
    consuming = asyncio.create_task(jetstream.consume(js, spec, handler, stop))
    try:
        await _acked_then_deleted(js, "floor", 30, seen)
        await jetstream.publish(js, subjects.deps("default", "a"), _edge(99))
        await _until(lambda: _async("h99.default.svc.cluster.local" in seen))
        await asyncio.sleep(0.5)  # a replay would come with it
        assert seen.count("h0.default.svc.cluster.local") == 1, len(seen)
        assert len(seen) == 31
        info = await js.consumer_info(subjects.DEPS_STREAM, "floor")
        assert info.config.opt_start_seq == 31
    finally:
        stop.set()
        await asyncio.wait_for(consuming, timeout=10)


async def test_a_restart_after_a_recovery_keeps_the_start_and_updates_the_rest(js, caplog) -> None:
    """A consumer re-created past its ack floor (deliver by start sequence) and then a restart
    of the service, which asks for its usual config (deliver all) with a changed limit: JetStream
    refuses to change a consumer's deliver policy, and the whole update was refused (old limits
    kept, a warning at every start; `make faults`). The restart keeps the consumer's start and
    updates what JetStream lets it update; nothing acked is delivered again."""
    seen: list[str] = []

    async def handler(batch: list[jetstream.Delivery]) -> None:
        seen.extend(d.event.destination_host for d in batch)

    stop = asyncio.Event()
    consuming = asyncio.create_task(
        jetstream.consume(js, _spec("restarted", floor_interval=0.1), handler, stop)
    )
    try:
        await _acked_then_deleted(js, "restarted", 5, seen)
        await jetstream.publish(js, subjects.deps("default", "a"), _edge(6))
        await _until(lambda: _async(len(seen) == 6))
    finally:
        stop.set()
        await asyncio.wait_for(consuming, timeout=10)
    recovered = (await js.consumer_info(subjects.DEPS_STREAM, "restarted")).config
    assert recovered.opt_start_seq == 6

    caplog.clear()
    stop = asyncio.Event()  # the restart, with another ack_wait and max_ack_pending
    spec = _spec("restarted", ack_wait=7.0, max_ack_pending=777)
    consuming = asyncio.create_task(jetstream.consume(js, spec, handler, stop))
    try:
        await jetstream.publish(js, subjects.deps("default", "a"), _edge(7))
        await _until(lambda: _async(len(seen) == 7))
        await asyncio.sleep(0.3)  # a replay would come with it
    finally:
        stop.set()
        await asyncio.wait_for(consuming, timeout=10)
    assert seen.count("h0.default.svc.cluster.local") == 1 and len(seen) == 7, seen
    config = (await js.consumer_info(subjects.DEPS_STREAM, "restarted")).config
    assert config.max_ack_pending == 777 and config.ack_wait == 7.0
    assert config.opt_start_seq == 6  # the start kept
    assert "keeps its old config" not in caplog.text


def test_a_replica_killed_mid_batch_costs_its_messages_at_most_15_s() -> None:
    """The messages a replica held when it was SIGKILLed are delivered again after `ack_wait`
    (a batch being handled is kept alive every half of it, so it can be short): at most 15 s,
    not the 60 s with which `make faults`' three reconciler kills left edges unlearned > 45 s."""
    spec = _spec("any")
    assert spec.ack_wait <= 15.0
    assert spec.ack_wait / 2 >= 5.0  # keep-alives of slow batches stay rare


async def _async(value: bool) -> bool:
    return value


def _recoveries(consumer: str) -> float:
    labels = {"consumer": consumer}
    return REGISTRY.get_sample_value("lazyload_consumer_recoveries_total", labels) or 0.0


async def test_a_message_that_exhausts_max_deliver_is_dead_lettered(js) -> None:
    """A message that keeps failing is retried `max_deliver` times, then dead-lettered with its
    last reason (it used to be retried for ever; JetStream alone would drop it silently)."""
    sent = _edge(1)
    await jetstream.publish(js, subjects.deps("default", "a"), sent)
    deliveries: list[int] = []
    stop = asyncio.Event()

    async def handler(batch: list[jetstream.Delivery]) -> None:
        for d in batch:
            deliveries.append(int(d.msg.metadata.num_delivered))
            d.retry("the API is down", delay=0.01)

    spec = _spec("exhausted", max_deliver=3)
    consuming = asyncio.create_task(jetstream.consume(js, spec, handler, stop))
    try:
        letter = await _dead_letter(js, "dlq-exhausted", timeout=10)
        assert letter.reason == "max deliveries (3) reached, last: the API is down"
        assert codec.decode_as(letter.payload, events.DependencyObserved) == sent
    finally:
        stop.set()
        await asyncio.wait_for(consuming, timeout=10)
    assert deliveries == [1, 2, 3]
    info = await _settled(js, "exhausted")
    assert info.config.max_deliver == 3
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_a_message_given_up_on_outside_the_loop_is_dead_lettered(js) -> None:
    """The last delivery of a message went to a replica that stopped (or missed its ack
    deadline): JetStream gives up on it without any loop seeing it fail. The max-deliveries
    advisory names it, and a running loop of the durable dead-letters it."""
    await jetstream.publish(js, subjects.deps("default", "a"), _edge(1))
    release, blocking = asyncio.Event(), asyncio.Event()
    stop = asyncio.Event()

    async def handler(batch: list[jetstream.Delivery]) -> None:
        blocking.set()
        await release.wait()  # holds the loop's only slot: it fetches nothing else meanwhile

    spec = _spec("given-up", max_deliver=2, ack_wait=1.0)
    consuming = asyncio.create_task(jetstream.consume(js, spec, handler, stop))
    try:
        await asyncio.wait_for(blocking.wait(), 10)
        victim = _edge(2)
        await jetstream.publish(js, subjects.deps("default", "a"), victim)
        crashed = await js.pull_subscribe(
            "lazyload.deps.>", durable="given-up", stream=subjects.DEPS_STREAM
        )
        fetched = []
        async with asyncio.timeout(10):
            while len(fetched) < 2:  # both deliveries, never settled (a replica that died)
                with contextlib.suppress(NatsTimeoutError, TimeoutError):
                    fetched += [m.metadata.num_delivered for m in await crashed.fetch(1, 1.5)]
        assert fetched == [1, 2]
        # JetStream gives up when it would deliver again, i.e. to a waiting pull request
        with contextlib.suppress(NatsTimeoutError, TimeoutError):
            assert await crashed.fetch(1, 2.5) == []
        letter = await _dead_letter(js, "dlq-given-up", timeout=10)
        assert letter.reason == "max deliveries (2) reached without being settled"
        assert codec.decode_as(letter.payload, events.DependencyObserved) == victim
    finally:
        release.set()
        stop.set()
        await asyncio.wait_for(consuming, timeout=10)


def test_nak_delay_doubles_per_delivery_is_capped_and_never_shortens_the_error_s_own() -> None:
    for deliveries, nominal in [(1, 0.5), (2, 1.0), (3, 2.0), (5, 8.0)]:
        delays = [jetstream.nak_delay(0.5, deliveries) for _ in range(200)]
        assert 0.8 * nominal <= min(delays) and max(delays) <= 1.2 * nominal
        assert len(set(delays)) > 1  # jittered
    assert jetstream.nak_delay(1.0, 50) <= 1.2 * jetstream.MAX_NAK_DELAY
    assert jetstream.nak_delay(30.0, 1) >= 30.0  # a Retry-After is a floor


async def test_a_failing_message_is_redelivered_ever_later(js) -> None:
    """Exponential back-off on a real server: the gaps between deliveries grow."""
    await jetstream.publish(js, subjects.deps("default", "a"), _edge(1))
    seen: list[float] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def handler(batch: list[jetstream.Delivery]) -> None:
        seen.append(loop.time())
        if len(seen) == 4:
            stop.set()
        for d in batch:
            d.retry("not yet", delay=0.2)

    await asyncio.wait_for(jetstream.consume(js, _spec("backoff"), handler, stop), timeout=15)
    gaps = [b - a for a, b in itertools.pairwise(seen)]
    # nominal 0.2, 0.4, 0.8 s (+-20% jitter, plus fetch latency)
    assert gaps[0] >= 0.15 and gaps[1] >= 0.3 and gaps[2] >= 0.6, gaps
    assert gaps[2] > gaps[0] * 2, gaps


async def test_last_per_subject_reads_the_newest_of_each_subject_in_one_pass(js) -> None:
    """The helper behind the reconciler's seed and the writer's drift repair: the newest message
    of every matching subject, in small fetches, and its consumer is gone afterwards."""
    prefix = f"{subjects.FENCE_PREFIX}.lps{id(js)}"
    for subject, payload in [("a", b"a1"), ("b", b"b1"), ("a", b"a2"), ("c", b"c1"), ("b", b"b2")]:
        await js.publish(f"{prefix}.{subject}", payload)
    await js.publish(f"{subjects.FENCE_PREFIX}.other.x", b"not matched")
    found = await jetstream.last_per_subject(js, subjects.FENCES_STREAM, f"{prefix}.>", batch=2)
    assert sorted((m.subject.rsplit(".", 1)[1], m.data) for m in found) == [
        ("a", b"a2"),
        ("b", b"b2"),
        ("c", b"c1"),
    ]
    consumers = await js.consumers_info(subjects.FENCES_STREAM)
    assert not [c for c in consumers if c.name.startswith("last-per-subject-")]
    assert await jetstream.last_per_subject(js, subjects.FENCES_STREAM, f"{prefix}.none.>") == []


async def _acked_then_deleted(js: Any, name: str, count: int, seen: list[str]) -> None:
    """Publish `count` edges, wait until the consumer `name` handled them, acked them all and its
    loop read its ack floor, then delete the consumer (as a server that lost it would)."""
    for i in range(count):
        await jetstream.publish(js, subjects.deps("default", "a"), _edge(i))
    await _until(lambda: _async(len(seen) == count))

    async def floor_read() -> bool:
        info = await js.consumer_info(subjects.DEPS_STREAM, name)
        return info.ack_floor.stream_seq >= count

    await _until(floor_read)
    await asyncio.sleep(0.3)  # the loop's next read of the floor
    await js.delete_consumer(subjects.DEPS_STREAM, name)


async def _dead_letters(js: Any, durable: str, count: int, *, timeout: float) -> list[Any]:
    """The first `count` dead letters of the test's DLQ subject, read by consumer `durable`."""
    dlq = await js.pull_subscribe("lazyload.dlq.test", durable=durable, stream=subjects.DLQ_STREAM)
    return [codec.decode(m.data) for m in await dlq.fetch(count, timeout=timeout)]


async def _dead_letter(js: Any, durable: str, *, timeout: float) -> Any:
    """The first dead letter of the test's DLQ subject, read by consumer `durable`."""
    [letter] = await _dead_letters(js, durable, 1, timeout=timeout)
    return letter
