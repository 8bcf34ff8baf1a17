"""Two replicas of the writer: the revision guard lives in the stored Sidecar, not in a process.

Covers: two handlers with separate memories (two replicas) against one emulator - a newer revision
with the same content moves the stored `lazyload.io/fence-revision` annotation, so an older
revision handled afterwards by the other replica is stale; a replica whose write meets a 409
because the other replica wrote in between re-reads and finds its revision stale; an older
enabled revision does not bring back a Sidecar a newer disabled revision deleted (the last event
of the fence in the stream guards creates); and two real
`run()` instances on one NATS durable consumer and one emulator, fed a burst of revisions (with
repeated contents) and then reordered old revisions, end at the last revision.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from typing import Any

import pytest
from lazyload_common import events, jetstream, kube, subjects
from lazyload_common.settings import NatsSettings
from lazyload_sidecar_writer import applying, consuming, metrics
from lazyload_sidecar_writer.rendering import RawObject
from lazyload_testing.kube import KubeEmulator, service_fence
from lazyload_testing.kube_real import RealKube

from .conftest import make_fence
from .test_writer import _settings, running

FENCES = "/apis/microservice.slime.io/v1alpha1/namespaces/default/servicefences"
A = ["a.default.svc.cluster.local"]
B = ["b.default.svc.cluster.local"]


def _replica(
    server: RealKube | KubeEmulator, nats_url: str = "nats://127.0.0.1:1"
) -> consuming.FenceHandler:
    settings = _settings(nats_url, server, coalesce_window=0)
    sink = applying.KubeSink(kube.AsyncKube(server.api_client()), settings)

    async def publish(report: events.SidecarApplied) -> None:
        return None

    return consuming.FenceHandler(settings, sink, publish)


def _owner(
    server: RealKube | KubeEmulator, name: str = "productpage"
) -> Callable[..., events.FenceChanged]:
    """`make_fence` for a ServiceFence created here, the owner of the Sidecars written for it (a
    real API server's garbage collector deletes a Sidecar whose owner does not exist)."""
    created = kube.KubeApi(server.api_client()).create(FENCES, service_fence(name))
    return functools.partial(make_fence, name=name, uid=created["metadata"]["uid"])


async def _written(
    server: RealKube | KubeEmulator,
) -> tuple[Callable[..., events.FenceChanged], consuming.FenceHandler]:
    """productpage's fence (`_owner`) and a replica that wrote its revision 1 (hosts A)."""
    fence = _owner(server)
    one = _replica(server)
    await one.process(fence(revision=1, hosts=A))
    return fence, one


def _sidecar_requests(server: RealKube | KubeEmulator) -> list[Any]:
    """The recorded requests for Sidecars (the sink's only kind; a real server's log also holds
    its own and its controllers' requests)."""
    return [r for r in server.requests() if "/sidecars" in r.path]


def _revision_and_hosts(stored: RawObject | None) -> tuple[str, list[str]]:
    assert stored is not None
    hosts = stored["spec"]["egress"][0]["hosts"]
    return stored["metadata"]["annotations"]["lazyload.io/fence-revision"], [
        h for h in hosts if h.startswith("*/")
    ]


async def test_older_revision_on_another_replica_is_stale(
    kube_cluster: RealKube | KubeEmulator,
) -> None:
    fence = _owner(kube_cluster)
    one, two = _replica(kube_cluster), _replica(kube_cluster)
    assert (await one.process(fence(revision=4, hosts=A))).write == "create"
    # revision 6 has the content of 4 again: only the annotation moves, but it must move
    assert (await two.process(fence(revision=6, hosts=A))).write == "replace"
    assert (await one.process(fence(revision=5, hosts=B))).action == "stale"
    sink = one.sink
    assert isinstance(sink, applying.KubeSink)
    stored = await sink.get("default", "productpage")
    assert _revision_and_hosts(stored) == ("6", ["*/a.default.svc.cluster.local"])
    assert (await two.process(fence(revision=6, hosts=A))).action == "unchanged"


async def test_write_racing_another_replica_rereads_on_409(
    kube_cluster: RealKube | KubeEmulator,
) -> None:
    fence, one = await _written(kube_cluster)
    two = _replica(kube_cluster)
    sink = one.sink
    assert isinstance(sink, applying.KubeSink)
    # replica two writes revision 3 after one's write: what one remembers is now out of date
    await two.process(fence(revision=3, hosts=A))
    kube_cluster.clear_requests()
    result = await one.process(fence(revision=2, hosts=B))
    assert result.action == "stale"
    verbs = [(r.verb, r.status) for r in _sidecar_requests(kube_cluster) if r.verb != "POST"]
    # no read first (one remembers its write), the PUT on the old resourceVersion is refused,
    # the retry reads afresh and finds the newer revision
    assert verbs == [("PUT", 409), ("GET", 200)]
    stored = await sink.get("default", "productpage")
    assert _revision_and_hosts(stored) == ("3", ["*/a.default.svc.cluster.local"])


async def test_a_remembered_write_saves_the_read(kube_cluster: RealKube | KubeEmulator) -> None:
    fence, one = await _written(kube_cluster)
    kube_cluster.clear_requests()
    assert (await one.process(fence(revision=2, hosts=B))).write == "replace"
    assert (await one.process(fence(revision=2, hosts=B))).action == "unchanged"
    assert [r.verb for r in _sidecar_requests(kube_cluster)] == ["PUT"]


async def test_an_unknown_existing_sidecar_is_read_after_the_create_409(
    kube_cluster: RealKube | KubeEmulator,
) -> None:
    fence, _ = await _written(kube_cluster)
    two = _replica(kube_cluster)
    kube_cluster.clear_requests()
    errors_before = metrics.API_ERRORS.labels("409")._value.get()
    assert (await two.process(fence(revision=2, hosts=B))).write == "replace"
    verbs = [(r.verb, r.status) for r in _sidecar_requests(kube_cluster)]
    assert verbs == [("POST", 409), ("GET", 200), ("PUT", 200)]
    assert metrics.API_ERRORS.labels("409")._value.get() == errors_before  # expected, not counted


async def test_a_sidecar_deleted_behind_our_back_is_recreated(
    kube_cluster: RealKube | KubeEmulator,
) -> None:
    fence, one = await _written(kube_cluster)
    sink = one.sink
    assert isinstance(sink, applying.KubeSink)
    await sink.delete("default", "productpage")  # not through the writer's memory
    result = await one.process(fence(revision=2, hosts=B))
    assert result.write == "create"
    stored = await sink.get("default", "productpage")
    assert _revision_and_hosts(stored) == ("2", ["*/b.default.svc.cluster.local"])


async def test_older_enabled_revision_does_not_revive_a_deleted_sidecar(
    nats_url: str, kube_cluster: RealKube | KubeEmulator
) -> None:
    """A deleted Sidecar has no annotation: the last event in the stream is the guard."""
    fence = _owner(kube_cluster)
    nc = await jetstream.connect(NatsSettings(url=nats_url), name="test")
    try:
        js = nc.jetstream()
        await jetstream.ensure_streams(js, names=(subjects.FENCES_STREAM,))
        one, two = _replica(kube_cluster), _replica(kube_cluster)
        for handler in (one, two):
            assert isinstance(handler.sink, applying.KubeSink)
            handler.sink.newest_revision = consuming.newest_in_stream(js)
        first = fence(revision=5, hosts=B)
        await jetstream.publish(js, subjects.fence("default", "productpage"), first)
        assert (await one.process(first)).write == "create"
        enabled, disabled = fence(revision=6, hosts=A), fence(revision=7, enabled=False)
        for event in (enabled, disabled):
            await jetstream.publish(js, subjects.fence("default", "productpage"), event)
        assert (await one.process(disabled)).write == "delete"
        assert (await two.process(enabled)).action == "stale"  # two never saw revision 7
        sink = two.sink
        assert isinstance(sink, applying.KubeSink)
        assert await sink.get("default", "productpage") is None
        await asyncio.to_thread(
            kube.KubeApi(kube_cluster.api_client()).delete, FENCES + "/productpage"
        )
        recreated = _owner(kube_cluster)(revision=1, hosts=A)  # a new fence starts over
        assert (await two.process(recreated)).write == "create"
    finally:
        await nc.close()


async def test_two_writers_on_one_consumer_end_at_the_last_revision(
    nats_url: str, kube_cluster: RealKube | KubeEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    handled_by: list[int] = []
    handle = consuming.FenceHandler.__call__

    async def recording(self: consuming.FenceHandler, batch: list[Any]) -> None:
        handled_by.append(id(self))
        await handle(self, batch)

    monkeypatch.setattr(consuming.FenceHandler, "__call__", recording)
    settings = _settings(nats_url, kube_cluster, coalesce_window=0.05)
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(running(settings, kube_cluster))
        second = await stack.enter_async_context(running(settings, kube_cluster))
        contents = [A, B, A + B]
        burst: list[events.FenceChanged] = [
            make_fence(revision=r, hosts=contents[r % 3]) for r in range(1, 31)
        ]
        for event in burst:
            await first.publish(event)
            await asyncio.sleep(0.005)  # a trickle, so that both replicas fetch
        for revision in (29, 28, 25, 27):  # reordered redeliveries of older revisions
            await second.publish(burst[revision - 1])
        await first.report(lambda r: r.revision == 30, timeout=20)
        await first.settled(timeout=20)
        stored = await first.get()
        assert _revision_and_hosts(stored) == ("30", ["*/" + h for h in contents[30 % 3]])
        writes: list[Any] = kube_cluster.writes("/sidecars")
        assert writes and all(w.status < 300 or w.status == 409 for w in writes)
        assert await second.get() == stored
    assert len(set(handled_by)) == 2  # both replicas took part


async def test_revision_superseded_in_the_stream_costs_no_api_request(
    nats_url: str, kube_cluster: RealKube | KubeEmulator
) -> None:
    """Behind a burst the writer meets many old revisions: each used to cost a rate-limited GET
    (and a write when it differed). One newer in the stream is skipped before any API call."""
    nc = await jetstream.connect(NatsSettings(url=nats_url), name="test")
    try:
        js = nc.jetstream()
        await jetstream.ensure_streams(js, names=(subjects.FENCES_STREAM,))
        handler = _replica(kube_cluster)
        fence = _owner(kube_cluster, "reviews")
        assert isinstance(handler.sink, applying.KubeSink)
        handler.sink.newest_revision = consuming.newest_in_stream(js)
        subject = subjects.fence("default", "reviews")
        burst = [fence(revision=r, hosts=[A, B][r % 2]) for r in (1, 2, 3)]
        for event in burst:
            await jetstream.publish(js, subject, event)
        kube_cluster.clear_requests()
        for event in burst[:2]:
            assert (await handler.process(event)).action == "stale"
        assert _sidecar_requests(kube_cluster) == []
        assert (await handler.process(burst[2])).write == "create"
        assert [r.verb for r in _sidecar_requests(kube_cluster)] == ["POST"]  # nothing read first
    finally:
        await nc.close()


@pytest.mark.parametrize(("written_cache", "asks"), [(100, 1), (0, 2)])
async def test_a_create_asks_the_stream_again_only_after_a_read(
    kube_cluster: RealKube | KubeEmulator, written_cache: int, asks: int
) -> None:
    """The newest-revision guard runs at the top of `apply`; a create planned without reading
    (nothing remembered yet) follows it at once and does not ask again, a create planned after a
    GET (no memory of written Sidecars) asks again, as time passed."""
    fence = _owner(kube_cluster)
    asked: list[int] = []

    async def newest(event: events.FenceChanged) -> int | None:
        asked.append(event.revision)
        return None

    settings = _settings("nats://127.0.0.1:1", kube_cluster, written_cache=written_cache)
    sink = applying.KubeSink(kube.AsyncKube(kube_cluster.api_client()), settings)
    sink.newest_revision = newest

    async def publish(report: events.SidecarApplied) -> None:
        return None

    handler = consuming.FenceHandler(settings, sink, publish)
    assert (await handler.process(fence(revision=1, hosts=A))).write == "create"
    assert asked == [1] * asks
