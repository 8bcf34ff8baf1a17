"""Dependency events to ServiceFences and fence events, against nats-server and the emulator.

Covers: an edge creates the caller's fence (Slime's auto shape) with the host in Slime's and
lazyload's status, and a FenceChanged (revision 1, the Service's selector) follows; a burst of 50
edges for one fence costs a handful of writes; an invalid host is dead-lettered while its valid
neighbour is learned; a caller without a Service waits and is dead-lettered after its retries, or
gets its fence when the Service shows up in time; a Service labelled
`slime.io/serviceFenced: "false"` gets no fence.
"""

from __future__ import annotations

import asyncio

from lazyload_common import codec, events, subjects
from prometheus_client import REGISTRY

DETAILS = "details.default.svc.cluster.local"
REVIEWS = "reviews.default.svc.cluster.local"


async def test_edge_creates_fence_and_publishes(reconciler, kit) -> None:
    kit.create_service("productpage")
    await reconciler.start()
    async with kit.events(subjects.fence("default", "productpage")) as seen:
        edge = kit.edge(DETAILS)
        await kit.publish(edge)
        event = await seen.until(lambda e: DETAILS in e.hosts)
    assert event.revision == 1 and event.enabled and not event.deleted
    assert event.first_seen == {DETAILS: float(int(edge.first_seen))}  # status keeps seconds
    assert event.workload_selector == {"app": "productpage"}
    assert event.added == [DETAILS] and event.reasons == {DETAILS: ["learned"]}
    fence = kit.fence("productpage")
    assert fence is not None and event.uid == fence["metadata"]["uid"]
    assert fence["metadata"]["labels"] == {"app.kubernetes.io/created-by": "fence-controller"}
    assert fence["spec"] == {"enable": True, "workloadSelector": {"fromService": True}}
    status = fence["status"]
    assert status["metricStatus"] == {f'{{destination_service="{DETAILS}"}}': "1"}
    assert status["domains"] == {DETAILS: {"hosts": [DETAILS], "status": "ACTIVE"}}
    assert status["learned"][DETAILS]["port"] == 9080
    assert status["revision"] == 1 and status["hostCount"] == 1


async def test_burst_of_edges_gives_few_writes(reconciler, kit) -> None:
    kit.create_service("productpage")
    hosts = [f"h{i}.default.svc.cluster.local" for i in range(50)]
    await kit.publish(*(kit.edge(h) for h in hosts))
    async with kit.events(subjects.fence("default", "productpage")) as seen:
        await reconciler.start()
        await seen.until(lambda e: len(e.hosts) == 50)
        published = await seen.drain()
    writes = kit.fence_writes()
    assert len(writes) <= 4, [(r.verb, r.path, r.status) for r in writes]
    assert len(published) <= 2
    fence = kit.fence("productpage")
    assert fence is not None and len(fence["status"]["learned"]) == 50


async def test_live_burst_is_coalesced(reconciler, kit) -> None:
    kit.create_service("productpage")
    await reconciler.start()
    hosts = [f"h{i}.default.svc.cluster.local" for i in range(50)]
    async with kit.events(subjects.fence("default", "productpage")) as seen:
        await kit.publish(*(kit.edge(h) for h in hosts))
        await seen.until(lambda e: len(e.hosts) == 50)
    assert len(kit.fence_writes()) < 25


async def test_invalid_host_is_dead_lettered_and_neighbour_learned(reconciler, kit) -> None:
    kit.create_service("productpage")
    dlq = await kit.dead_letters()
    await kit.publish(kit.edge("Not_A_Host!"), kit.edge(REVIEWS))
    async with kit.events() as seen:
        await reconciler.start()
        await seen.until(lambda e: REVIEWS in e.hosts)
    msg = await dlq.next_msg(timeout=10)
    dead = codec.decode_as(msg.data, events.DeadLetter)
    assert "invalid host" in dead.reason and dead.service == "fence-reconciler"
    original = codec.decode_as(dead.payload, events.DependencyObserved)
    assert original.destination_host == "Not_A_Host!"
    fence = kit.fence("productpage")
    assert fence is not None and list(fence["status"]["learned"]) == [REVIEWS]
    await dlq.unsubscribe()


async def test_caller_without_service_waits_then_dead_letters(reconciler, kit) -> None:
    dlq = await kit.dead_letters()
    await reconciler.start(missing_service_retries=2, missing_service_delay=0.1)
    await kit.publish(kit.edge(DETAILS, name="ghost"))
    msg = await dlq.next_msg(timeout=10)
    dead = codec.decode_as(msg.data, events.DeadLetter)
    assert "service not found" in dead.reason
    assert kit.fence("ghost") is None
    await dlq.unsubscribe()


async def test_service_appearing_in_time_gets_its_fence(reconciler, kit) -> None:
    await reconciler.start(missing_service_retries=50, missing_service_delay=0.2)
    await kit.publish(kit.edge(DETAILS, name="late"))
    await asyncio.sleep(0.3)
    kit.create_service("late")
    fence = await kit.eventually(lambda: kit.fence("late"))
    await kit.eventually(lambda: (kit.fence("late") or {}).get("status", {}).get("learned"))
    assert fence["metadata"]["name"] == "late"


async def test_service_opted_out_gets_no_fence(reconciler, kit) -> None:
    kit.create_service("global-sidecar", labels={"slime.io/serviceFenced": "false"})
    kit.create_service("productpage")
    async with kit.events() as seen:
        await reconciler.start()
        await kit.publish(kit.edge(DETAILS, name="global-sidecar"), kit.edge(DETAILS))
        await seen.until(lambda e: e.name == "productpage")
    assert kit.fence("global-sidecar") is None


async def test_a_namespace_or_wildcard_is_never_learned(reconciler, kit) -> None:
    """A dependency event names one host: `istio-system/*` or `*` (a forged event) would widen
    the caller's Sidecar to a whole namespace or the mesh. Each is refused, counted and
    dead-lettered alone; its neighbour of the same fence is learned (#16)."""
    kit.create_service("productpage")
    dlq = await kit.dead_letters()
    refused = REGISTRY.get_sample_value(
        "lazyload_fence_dead_letters_total", {"reason": "invalid-host"}
    )
    forged = ["istio-system/*", "*", "*/details.default.svc.cluster.local"]
    await kit.publish(*(kit.edge(host) for host in forged), kit.edge(REVIEWS))
    async with kit.events() as seen:
        await reconciler.start()
        event = await seen.until(lambda e: REVIEWS in e.hosts)
        await seen.drain()
    assert all(e.hosts == [REVIEWS] for e in seen.seen), seen.seen
    letters = [codec.decode_as((await dlq.next_msg(timeout=10)).data, events.DeadLetter)]
    letters += [codec.decode_as((await dlq.next_msg(timeout=10)).data, events.DeadLetter)]
    letters += [codec.decode_as((await dlq.next_msg(timeout=10)).data, events.DeadLetter)]
    assert all("invalid host" in letter.reason for letter in letters)
    hosts = sorted(
        codec.decode_as(d.payload, events.DependencyObserved).destination_host for d in letters
    )
    assert hosts == sorted(forged)
    assert (
        REGISTRY.get_sample_value("lazyload_fence_dead_letters_total", {"reason": "invalid-host"})
        == (refused or 0) + 3
    )
    fence = kit.fence("productpage")
    assert fence is not None and list(fence["status"]["learned"]) == [REVIEWS]
    assert event.hosts == [REVIEWS]
    await dlq.unsubscribe()


async def test_an_impossible_time_ends_only_its_own_message(reconciler, kit) -> None:
    """A first_seen of year 0, published the way the ingest encodes events (no model check on
    the way out), is dead-lettered on its own; its neighbour of the same fence is learned (it
    used to fail the fence's write, nak the whole batch and block the fence for ever: #19)."""
    kit.create_service("productpage")
    dlq = await kit.dead_letters()
    poisoned = codec.encode_with(kit.edge(DETAILS), first_seen=-62_167_219_200.0)
    await kit.js.publish(subjects.deps("default", "productpage"), poisoned)
    await kit.publish(kit.edge(REVIEWS))
    async with kit.events() as seen:
        await reconciler.start()
        event = await seen.until(lambda e: REVIEWS in e.hosts)
    assert DETAILS not in event.hosts
    dead = codec.decode_as((await dlq.next_msg(timeout=10)).data, events.DeadLetter)
    assert dead.reason.startswith("decode") and "first_seen" in dead.reason
    assert dead.payload == poisoned
    fence = kit.fence("productpage")
    assert fence is not None and list(fence["status"]["learned"]) == [REVIEWS]
    await dlq.unsubscribe()
