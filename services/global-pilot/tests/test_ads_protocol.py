"""The ADS state-of-the-world protocol, spoken by a test client over a real gRPC channel.

Covers: the first request of a type is answered with the snapshot's version and a nonce; an ACK
gets no answer; a NACK is counted and nothing is re-sent until a new snapshot; a stale nonce is
ignored; EDS answers hold only the requested names, and asking for a new name is answered; a
request before any snapshot is answered when one arrives; a new snapshot is pushed to subscribed
types whose version changed, clusters before endpoints before listeners before routes; snapshots
per node; the lifecycle hooks.
"""

from __future__ import annotations

import asyncio

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc
from lazyload_global_pilot import rendering, resources, server
from lazyload_global_pilot.cache import SnapshotCache
from lazyload_global_pilot.mesh import MeshState
from lazyload_global_pilot.snapshots import Snapshot

OPTIONS = rendering.RenderOptions(als=None)
A = "outbound|9080||a.default.svc.cluster.local"
B = "outbound|9080||b.default.svc.cluster.local"


def _snapshot(make_service, *names: str, endpoint: int | None = None) -> Snapshot:
    services = [
        make_service(n, endpoints=(("10.0.0.1", endpoint),) if endpoint else ()) for n in names
    ]
    return Snapshot.of(rendering.render(MeshState.of(services), OPTIONS))


def _names(response) -> list[str]:
    """Names of the clusters or load assignments in a response."""
    names = []
    for packed in response.resources:
        if response.type_url == resources.CLUSTER:
            message = cluster_pb2.Cluster()
            packed.Unpack(message)
            names.append(message.name)
        else:
            assignment = endpoint_pb2.ClusterLoadAssignment()
            packed.Unpack(assignment)
            names.append(assignment.cluster_name)
    return names


async def test_first_request_is_answered_and_ack_is_not(xds, ads_client, make_service):
    snapshot = _snapshot(make_service, "a")
    xds.cache.set(snapshot)
    client = ads_client()
    await client.send(resources.CLUSTER)
    response = await client.recv()
    assert response.type_url == resources.CLUSTER
    assert response.version_info == snapshot.version_of(resources.CLUSTER)
    assert response.nonce
    assert _names(response) == [A]
    await client.ack(response)
    assert await client.silent()
    assert xds.ads.stats.acks == 1


async def test_nack_is_counted_and_nothing_is_resent_until_a_new_snapshot(
    xds, ads_client, make_service
):
    xds.cache.set(_snapshot(make_service, "a"))
    client = ads_client()
    await client.send(resources.CLUSTER)
    bad = await client.recv()
    await client.send(resources.CLUSTER, nonce=bad.nonce, error="cluster rejected")
    assert await client.silent()
    assert xds.ads.stats.nacks == 1
    newer = _snapshot(make_service, "a", "b")
    xds.cache.set(newer)
    response = await client.recv()
    assert response.version_info == newer.version_of(resources.CLUSTER)
    assert response.nonce != bad.nonce


async def test_stale_nonce_is_ignored(xds, ads_client, make_service):
    xds.cache.set(_snapshot(make_service, "a"))
    client = ads_client()
    await client.send(resources.CLUSTER)
    first = await client.recv()
    xds.cache.set(_snapshot(make_service, "a", "b"))
    second = await client.recv()
    # A NACK of the superseded response must not count nor change anything.
    await client.send(resources.CLUSTER, nonce=first.nonce, error="late")
    assert await client.silent()
    assert xds.ads.stats.nacks == 0
    await client.ack(second)
    assert await client.silent()


async def test_eds_answers_only_requested_names_and_new_names(xds, ads_client, make_service):
    xds.cache.set(_snapshot(make_service, "a", "b"))
    client = ads_client()
    await client.send(resources.ENDPOINT, names=(A,))
    response = await client.recv()
    assert _names(response) == [A]
    await client.ack(response, names=(A,))
    assert await client.silent()
    await client.ack(response, names=(A, B))  # Envoy learnt cluster B: same version, new name
    grown = await client.recv()
    assert _names(grown) == [A, B]
    assert grown.version_info == response.version_info
    await client.ack(grown, names=(A,))  # a name dropped: nothing to send
    assert await client.silent()


async def test_request_before_any_snapshot_is_answered_when_one_arrives(
    xds, ads_client, make_service
):
    client = ads_client()
    await client.send(resources.LISTENER)
    assert await client.silent()
    xds.cache.set(_snapshot(make_service, "a"))
    response = await client.recv()
    assert response.type_url == resources.LISTENER
    assert len(response.resources) == 1


async def test_new_snapshot_is_pushed_in_make_before_break_order(xds, ads_client, make_service):
    xds.cache.set(_snapshot(make_service, "a"))
    client = ads_client()
    subscriptions = (
        (resources.ROUTE, ("global-sidecar",)),
        (resources.LISTENER, ()),
        (resources.ENDPOINT, (A, B)),
        (resources.CLUSTER, ()),
    )
    for type_url, names in subscriptions:
        await client.send(type_url, names=names)
        await client.ack(await client.recv(), names=names)
    assert await client.silent()
    newer = _snapshot(make_service, "a", "b", endpoint=8080)
    xds.cache.set(newer)
    pushed = [await client.recv() for _ in range(3)]
    assert [r.type_url for r in pushed] == [resources.CLUSTER, resources.ENDPOINT, resources.ROUTE]
    assert [r.version_info for r in pushed] == [newer.version_of(r.type_url) for r in pushed]
    assert await client.silent()  # the listeners did not change


async def test_each_node_gets_its_own_snapshot_or_the_default(xds, ads_client, make_service):
    xds.cache.set(_snapshot(make_service, "a"))
    xds.cache.set(_snapshot(make_service, "b"), node_key="special")
    plain, special = ads_client("plain"), ads_client("special")
    await plain.send(resources.CLUSTER)
    await special.send(resources.CLUSTER)
    assert _names(await plain.recv()) == [A]
    assert _names(await special.recv()) == [B]


async def test_hooks_see_the_stream_lifecycle(make_service):
    events: list[tuple] = []
    hooks = server.Hooks(
        on_stream_open=lambda sid: events.append(("open", sid)),
        on_stream_closed=lambda sid, node: events.append(("closed", sid, node and node.id)),
        on_request=lambda sid, req: events.append(("request", req.type_url)),
        on_response=lambda sid, resp: events.append(("response", resp.type_url)),
    )
    cache = SnapshotCache()
    cache.set(_snapshot(make_service, "a"))
    ads = server.AdsServer(cache, hooks=hooks)
    grpc_server, port = await server.start(ads, "127.0.0.1", 0)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
            request = server.Request(type_url=resources.CLUSTER)
            request.node.id = "hooked"
            await call.write(request)
            await call.read()
            await call.done_writing()
            for _ in range(100):
                if events[-1][0] == "closed":
                    break
                await asyncio.sleep(0.01)
    finally:
        await grpc_server.stop(0)
    assert events == [
        ("open", 1),
        ("request", resources.CLUSTER),
        ("response", resources.CLUSTER),
        ("closed", 1, "hooked"),
    ]
    assert ads.stats.streams_open == 0


async def test_a_failing_hook_does_not_break_the_stream(make_service):
    def boom(*_args) -> None:
        raise RuntimeError("hook failed")

    cache = SnapshotCache()
    cache.set(_snapshot(make_service, "a"))
    ads = server.AdsServer(cache, hooks=server.Hooks(on_request=boom, on_response=boom))
    grpc_server, port = await server.start(ads, "127.0.0.1", 0)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
            await call.write(server.Request(type_url=resources.CLUSTER))
            response = await asyncio.wait_for(call.read(), 2)
            assert isinstance(response, server.Response)
            assert response.type_url == resources.CLUSTER
            call.cancel()
    finally:
        await grpc_server.stop(0)
