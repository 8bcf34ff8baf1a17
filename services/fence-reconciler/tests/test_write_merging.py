"""The batch handler merges edges of a fence across batches: while a fence waits for its write
(a busy slot, its window since the last write), edges that later batches bring join that write.
A fake reconciler records every `learn` call; no I/O."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from lazyload_common import errors, events, jetstream
from lazyload_fence_reconciler import consuming, deciding, desiring, reconciling
from lazyload_fence_reconciler.settings import FenceSettings
from nats.aio.msg import Msg


class FakeReconciler:
    def __init__(self) -> None:
        self.calls: list[tuple[reconciling.Key, list[str]]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: Exception | None = None
        self.decisions = deciding.Decisions()

    def admit(self, edge: desiring.Edge) -> str | None:
        return "dispatched" if edge.host.startswith("dispatched.") else None

    async def learn(
        self, key: reconciling.Key, edges: Sequence[desiring.Edge], *, workload: str | None = None
    ) -> str:
        self.calls.append((key, sorted(e.host for e in edges)))
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return "learned"


def _delivery(caller: str, host: str) -> jetstream.Delivery:
    event = events.DependencyObserved(
        source_namespace="default",
        source_name=caller,
        destination_host=f"{host}.default.svc.cluster.local",
        first_seen=1.0,
    )
    msg = Msg(
        _client=None,  # type: ignore[arg-type]  # no client: the handler acks nothing
        subject=f"lazyload.deps.default.{caller}",
        data=b"x",
        headers={},
    )
    return jetstream.Delivery(msg, event)


def _handler(reconciler: FakeReconciler, **fence: object) -> consuming.BatchHandler:
    settings = FenceSettings(**{"coalesce_window": 0.0, **fence})
    return consuming.BatchHandler(
        reconciler,  # type: ignore[arg-type]  # a stand-in: Reconciler's admit, learn, decisions
        settings,
    )


async def test_edges_of_later_batches_join_the_waiting_write() -> None:
    fake = FakeReconciler()
    handler = _handler(fake, concurrency=1)
    fake.gate.clear()  # the first write (fence a) holds the only slot
    first = asyncio.create_task(handler([_delivery("a", "x1")]))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(handler([_delivery("b", "y1"), _delivery("a", "x2")]))
    await asyncio.sleep(0.01)
    third = asyncio.create_task(handler([_delivery("b", "y2"), _delivery("a", "x3")]))
    await asyncio.sleep(0.01)
    fake.gate.set()
    await asyncio.gather(first, second, third)
    key_a, key_b = ("default", "a"), ("default", "b")
    suffix = ".default.svc.cluster.local"
    assert fake.calls == [
        (key_a, ["x1" + suffix]),
        (key_b, ["y1" + suffix, "y2" + suffix]),
        (key_a, ["x2" + suffix, "x3" + suffix]),
    ]


async def test_a_fence_is_written_at_most_once_per_window() -> None:
    fake = FakeReconciler()
    # a window far longer than any scheduling delay of a busy CI machine, so that "held by the
    # window" and "not held" cannot be mistaken for each other
    handler = _handler(fake, coalesce_window=1.5)
    loop = asyncio.get_running_loop()
    await handler([_delivery("a", "x1")])
    written = loop.time()
    await asyncio.gather(handler([_delivery("a", "x2")]), handler([_delivery("a", "x3")]))
    assert loop.time() - written >= 1.4  # the second write waited for the window
    assert [hosts for _, hosts in fake.calls] == [
        ["x1.default.svc.cluster.local"],
        ["x2.default.svc.cluster.local", "x3.default.svc.cluster.local"],
    ]
    # another fence is not held by a's window
    started = loop.time()
    await handler([_delivery("b", "y1")])
    assert loop.time() - started < 1.0


async def test_outcome_of_a_merged_write_reaches_every_delivery() -> None:
    fake = FakeReconciler()
    handler = _handler(fake, concurrency=1)
    fake.gate.clear()
    fake.fail = errors.TemporaryError("conflict storm", delay=0.5)
    blocker = [_delivery("z", "q")]
    first = asyncio.create_task(handler(blocker))
    await asyncio.sleep(0.01)
    one, two = [_delivery("a", "x1")], [_delivery("a", "x2"), _delivery("a", "dispatched.x")]
    merged = asyncio.gather(handler(one), handler(two))
    await asyncio.sleep(0.01)
    fake.gate.set()
    await asyncio.gather(first, merged)
    assert len(fake.calls) == 2  # z, then a once for x1 + x2 (the dispatched host never learned)
    for d in [*blocker, *one, *two]:
        assert isinstance(d.error, errors.TemporaryError) and d.error.delay == 0.5
        assert d.event is None  # slimmed while held


async def test_a_missing_service_retries_then_dead_letters_each_delivery() -> None:
    fake = FakeReconciler()
    fake.fail = reconciling.Waiting("service not found: default/a", delay=2.0)
    handler = _handler(fake, missing_service_retries=1)
    batch = [_delivery("a", "x1"), _delivery("a", "x2")]
    await handler(batch)
    assert all(isinstance(d.error, errors.PermanentError) for d in batch)
    assert fake.calls == [
        (("default", "a"), ["x1.default.svc.cluster.local", "x2.default.svc.cluster.local"])
    ]
