"""The whole service (`app.run`): real gRPC ALS server, real nats-server, index fed directly.

- start on port 0, learn the bound ports (`on_bound`), `/healthz`, `/readyz`, `/metrics`;
- ALS streams in -> deduplicated `DependencyObserved` events on JetStream, across streams;
- garbage bytes on a stream are counted (`lazyload_ingest_rejected_total{reason=
  "malformed_message"}`) and the same stream, and new ones, go on;
- the stream identifier of ordinary sidecars is kept per stream;
- NATS restarts: the gRPC side keeps reading, `/readyz` says NATS is away but stays 200 (ingest
  keeps its Service and buffers), edges seen meanwhile are published when it is back;
- `stop` ends `run` cleanly; a gRPC port in use makes `run` fail with OSError, cleanly.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import httpx
import msgpack
import pytest
from lazyload_accesslog_ingest import app
from lazyload_accesslog_ingest.settings import GrpcSettings, IngestSettings
from lazyload_common import subjects
from lazyload_common.settings import AdminSettings, NatsSettings
from lazyload_testing import ingest as t
from lazyload_testing.nats import NatsServer
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

M = t.SampleMesh
DETAILS = "details.default.svc.cluster.local"


async def test_ports_health_and_metrics(start_ingest) -> None:
    ingest = await start_ingest()
    assert ingest.ports.grpc > 0 and ingest.ports.admin > 0
    async with httpx.AsyncClient(base_url=ingest.admin_url) as http:
        assert (await http.get("/healthz")).status_code == 200
        ready = await http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"nats": True, "index": True, "grpc": True}
        metrics = (await http.get("/metrics")).text
    for name in (
        "lazyload_ingest_entries_total",
        "lazyload_ingest_rejected_total",
        "lazyload_ingest_edges_published_total",
        "lazyload_ingest_duplicates_suppressed_total",
        "lazyload_ingest_unknown_callers_total",
        "lazyload_ingest_buffer_edges",
        "lazyload_ingest_publish_failures_total",
    ):
        assert name in metrics


async def test_access_logs_become_deduplicated_events(start_ingest, observer: NATS) -> None:
    ingest = await start_ingest()
    entries = t.metric_value("lazyload_ingest_entries_total", {"type": "http"})
    unknown = t.metric_value("lazyload_ingest_unknown_callers_total")
    async with t.AlsClient(ingest.target) as client:
        first = t.message(
            t.http_entry("details:9080"),
            t.http_entry("details.default:9080"),  # the same edge
            t.http_entry("www.example.com"),
            t.http_entry("nowhere", flags=["NR"], code=404),
            t.http_entry("details:9080", caller="10.9.9.9"),
            t.http_entry("details:9080", caller=M.MULTI_IP),  # productpage (dup) + frontend
            ident=t.identifier(),
        )
        await client.send(first, t.message(t.tcp_entry(M.RATINGS_CLUSTER_IP, 9080)))
        await client.send(t.message(t.http_entry("details:9080"), ident=t.identifier()))
        http_entries = t.metric_value("lazyload_ingest_entries_total", {"type": "http"})
        got = await t.events_before_marker(client, observer)  # these and nothing more
    edges = sorted((m.subject, m.event.destination_host, m.event.protocol) for m in got)
    assert edges == [
        ("lazyload.deps.default.frontend", DETAILS, "http"),
        ("lazyload.deps.default.productpage", DETAILS, "http"),
        ("lazyload.deps.default.productpage", "ratings.shop.svc.cluster.local", "tcp"),
        ("lazyload.deps.default.productpage", "www.example.com", "http"),
    ]
    assert all(m.event.reporter == "test-ingest" for m in got)
    assert http_entries == entries + 7
    assert t.metric_value("lazyload_ingest_unknown_callers_total") == unknown + 1


async def test_garbage_is_counted_and_streams_go_on(start_ingest, observer: NATS) -> None:
    ingest = await start_ingest()
    malformed = t.metric_value("lazyload_ingest_rejected_total", {"reason": "malformed_message"})
    async with t.AlsClient(ingest.target) as client:
        stream = client.open()
        await stream.send(t.message(ident=t.identifier()))
        await stream.send(b"\xff\xfe garbage \x00\x01")
        await stream.send(t.message(t.http_entry("details:9080")))
        await stream.close()
        # garbage alone on a stream, then a valid message on a new stream
        await client.send(b"\x0a\xff\xff\xff\xff\xff")
        await client.send(t.message(t.http_entry("reviews:9080")))
    await t.eventually(
        lambda: (
            t.metric_value("lazyload_ingest_rejected_total", {"reason": "malformed_message"})
            == malformed + 2
        ),
        what="two malformed messages counted",
    )

    async def both() -> bool:
        return len(await t.read_dependency_events(observer)) == 2

    await t.eventually(both, what="the valid edges of both streams")


async def test_impossible_start_times_are_never_published(start_ingest, observer: NATS) -> None:
    """A negative start time, year 0 or one far in the future (a broken or hostile sender) is
    replaced by the time of observation and counted: a poisoned `first_seen` would fail the
    reconciler (#19)."""
    ingest = await start_ingest()
    clamped = t.metric_value("lazyload_ingest_start_times_clamped_total")
    year_0 = -62_167_219_200.0  # 0000-01-01T00:00:00Z
    async with t.AlsClient(ingest.target) as client:
        await client.send(
            t.message(
                t.http_entry("a.example.com", start=-1_000_000.0),
                t.http_entry("b.example.com", start=year_0),
                t.http_entry("c.example.com", start=time.time() + 10 * 365 * 86400),
                t.http_entry("d.example.com", start=1_700_000_000.0),
                ident=t.identifier(),
            )
        )

    async def four() -> bool:
        return len(await _raw_dependency_events(observer)) == 4

    await t.eventually(four, what="the four edges")
    published = {e["destination_host"]: e for e in await _raw_dependency_events(observer)}
    for host in ("a.example.com", "b.example.com", "c.example.com"):
        assert published[host]["first_seen"] == published[host]["observed_at"], host
    assert published["d.example.com"]["first_seen"] == 1_700_000_000.0
    assert t.metric_value("lazyload_ingest_start_times_clamped_total") == clamped + 3


async def _raw_dependency_events(nc: NATS) -> list[dict[str, Any]]:
    """The payloads of the dependency stream as published (msgpack maps, not decoded through the
    event model, which would refuse an impossible time itself)."""
    js = nc.jetstream()
    try:
        info = await js.stream_info(subjects.DEPS_STREAM)
    except NotFoundError:
        return []
    if not info.state.messages:
        return []
    found = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        found.append(msgpack.unpackb((await js.get_msg(subjects.DEPS_STREAM, seq)).data))
    return found


async def test_sidecar_stream_identity(start_ingest, observer: NATS) -> None:
    ingest = await start_ingest()
    ident = t.identifier(
        "sidecar~10.1.0.7~web-1.default~default.svc.cluster.local",
        metadata={"NAMESPACE": "default", "WORKLOAD_NAME": "web", "LABELS": {"tier": "web"}},
    )
    async with t.AlsClient(ingest.target) as client:
        stream = client.open()
        await stream.send(t.message(ident=ident))
        await stream.send(t.message(t.http_entry("details:9080", caller="10.1.0.7")))
        await stream.send(t.message(t.http_entry("reviews:9080", upstream_cluster="inbound|80||")))
        await stream.close()

    async def one() -> bool:
        return len(await t.read_dependency_events(observer)) == 1

    await t.eventually(one)
    [msg] = await t.read_dependency_events(observer)
    assert msg.subject == "lazyload.deps.default.frontend"


async def test_nats_restart(start_ingest, nats_server: NatsServer, observer: NATS) -> None:
    ingest = await start_ingest()
    async with (
        t.AlsClient(ingest.target) as client,
        httpx.AsyncClient(base_url=ingest.admin_url) as http,
    ):
        await client.send(t.message(t.http_entry("details:9080"), ident=t.identifier()))

        async def first() -> bool:
            return len(await t.read_dependency_events(observer)) == 1

        await t.eventually(first)
        await asyncio.to_thread(nats_server.stop)

        async def unready() -> bool:
            return (await http.get("/readyz")).json()["checks"]["nats"] is False

        await t.eventually(unready, what="readyz to see NATS down")
        # ...yet ingest stays ready: it keeps its Service and buffers the edges
        assert (await http.get("/readyz")).status_code == 200
        # the gRPC side keeps reading while NATS is away
        await client.send(t.message(t.http_entry("reviews:9080"), t.http_entry("ratings.shop")))
        await t.eventually(lambda: t.metric_value("lazyload_ingest_buffer_edges") >= 2)
        await asyncio.to_thread(nats_server.restart)

        async def all_three() -> bool:
            return observer.is_connected and len(await t.read_dependency_events(observer)) == 3

        await t.eventually(all_three, timeout=20, what="buffered edges after the restart")
        assert (await http.get("/readyz")).status_code == 200


async def test_stop_ends_run(start_ingest) -> None:
    ingest = await start_ingest()
    ingest.stop.set()
    await asyncio.wait_for(ingest.task, 10)
    assert ingest.task.exception() is None


async def test_port_in_use_fails_cleanly(nats_server: NatsServer) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = IngestSettings(
            nats=NatsSettings(url=nats_server.url),
            admin=AdminSettings(host="127.0.0.1", port=0),
            grpc=GrpcSettings(host="127.0.0.1", port=taken.getsockname()[1]),
        )
        with pytest.raises(OSError, match="cannot bind"):
            await asyncio.wait_for(app.run(settings, index=t.sample_index()), 20)


async def test_a_host_the_fence_dropped_is_published_again_at_its_next_call(
    start_ingest, observer: NATS
) -> None:
    """After a reset (or recycling) drops a host from a fence, the caller's next call to it is
    published at once, not after the refresh interval, and JetStream does not drop it as a
    repeat (a message id of its own)."""
    from lazyload_common import codec, events

    ingest = await start_ingest()
    call = t.message(t.http_entry("details:9080"), ident=t.identifier())
    async with t.AlsClient(ingest.target) as client:
        await client.send(call)

        async def count(n: int) -> bool:
            got = await t.read_dependency_events(observer)
            return len([m for m in got if not t.is_marker(m)]) >= n

        await t.eventually(lambda: count(1), what="the first event")
        await client.send(call)  # a duplicate within the refresh interval: suppressed
        assert len(await t.events_before_marker(client, observer)) == 1
        forgotten = t.metric_value("lazyload_ingest_edges_forgotten_total")
        reset = events.FenceChanged(
            namespace="default",
            name="productpage",
            uid="u-1",
            revision=3,
            hosts=[],
            removed=[DETAILS],
            workload_selector={"app": "productpage"},
        )
        await observer.publish(subjects.fence("default", "productpage"), codec.encode(reset))

        async def forgot() -> bool:
            return t.metric_value("lazyload_ingest_edges_forgotten_total") == forgotten + 1

        await t.eventually(forgot, what="the edge forgotten")
        await client.send(call)
        await t.eventually(lambda: count(2), what="the event after the reset")
    got = await t.read_dependency_events(observer)
    assert [m.event.destination_host for m in got if not t.is_marker(m)] == [DETAILS, DETAILS]
