"""Snapshots and the per-node snapshot cache.

Covers: versions are content hashes (same render, same versions; a change moves only the types it
touches); `consistent()` catches missing and unreferenced EDS/RDS names; `get` filters by name;
the cache refuses inconsistent snapshots, does not notify for an unchanged version, serves the
default or a node's own snapshot, and wakes watchers on change.
"""

from __future__ import annotations

import asyncio

import pytest
from envoy.config.core.v3 import base_pb2
from lazyload_global_pilot import rendering, resources
from lazyload_global_pilot.cache import SnapshotCache
from lazyload_global_pilot.errors import InconsistentSnapshotError
from lazyload_global_pilot.mesh import MeshState
from lazyload_global_pilot.snapshots import Snapshot

OPTIONS = rendering.RenderOptions(als=rendering.AlsTarget(host="127.0.0.1", port=8082))


@pytest.fixture
def snap(make_service):
    def build(*names: str, endpoint: int | None = None) -> Snapshot:
        services = [
            make_service(n, endpoints=(("10.0.0.1", endpoint),) if endpoint else ()) for n in names
        ]
        return Snapshot.of(rendering.render(MeshState.of(services), OPTIONS))

    return build


def test_same_content_same_versions(snap):
    assert snap("a", "b").version == snap("b", "a").version
    assert snap("a").versions == snap("a").versions


def test_a_change_moves_only_the_types_it_touches(snap):
    before, after = snap("a"), snap("a", endpoint=8080)
    assert before.version != after.version
    assert before.version_of(resources.ENDPOINT) != after.version_of(resources.ENDPOINT)
    for unchanged in (resources.CLUSTER, resources.LISTENER, resources.ROUTE):
        assert before.version_of(unchanged) == after.version_of(unchanged)


def test_version_of_an_absent_type_is_empty(snap):
    assert snap("a").version_of("type.googleapis.com/some.Other") == ""


def test_get_filters_by_name(snap):
    snapshot = snap("a", "b")
    eds = "outbound|9080||a.default.svc.cluster.local"
    assert list(snapshot.get(resources.ENDPOINT, [eds, "missing"])) == [eds]
    assert len(snapshot.get(resources.ENDPOINT)) == 2


def test_rendered_snapshots_are_consistent(snap):
    snap("a", "b").consistent()
    snap().consistent()


def test_missing_and_unreferenced_resources_are_inconsistent(snap):
    full = snap("a")
    content = {t: dict(byname) for t, byname in full.resources.items()}
    content[resources.ENDPOINT] = {"stray": next(iter(content[resources.ENDPOINT].values()))}
    content[resources.ROUTE] = {}
    with pytest.raises(InconsistentSnapshotError) as caught:
        Snapshot.of(content).consistent()
    problems = caught.value.problems
    assert any(
        "'outbound|9080||a.default.svc.cluster.local' is referenced but missing" in p
        for p in problems
    )
    assert any("'stray' is not referenced" in p for p in problems)
    assert any(
        "RouteConfiguration 'global-sidecar' is referenced but missing" in p for p in problems
    )


def test_snapshot_content_cannot_be_changed(snap):
    snapshot = snap("a")
    with pytest.raises(TypeError):
        snapshot.resources[resources.CLUSTER]["x"] = None


def _node(node_id: str) -> base_pb2.Node:
    return base_pb2.Node(id=node_id)


def test_cache_refuses_an_inconsistent_snapshot(snap):
    content = {t: dict(byname) for t, byname in snap("a").resources.items()}
    content[resources.ENDPOINT] = {}
    cache = SnapshotCache()
    with pytest.raises(InconsistentSnapshotError):
        cache.set(Snapshot.of(content))
    assert cache.get(_node("n")) is None


def test_cache_serves_the_default_unless_a_node_has_its_own(snap):
    cache = SnapshotCache()
    default, own = snap("a"), snap("b")
    cache.set(default)
    cache.set(own, node_key="special")
    assert cache.get(_node("any")) is default
    assert cache.get(_node("special")) is own
    cache.clear("special")
    assert cache.get(_node("special")) is default


def test_setting_the_same_version_is_no_change(snap):
    cache = SnapshotCache()
    assert cache.set(snap("a")) is True
    assert cache.set(snap("a")) is False
    assert cache.set(snap("a", "b")) is True


async def test_watch_returns_at_once_when_the_node_is_behind(snap):
    cache = SnapshotCache()
    cache.set(snap("a"))
    got = await asyncio.wait_for(cache.watch(_node("n"), known_version=None), 1)
    assert got.version == snap("a").version


async def test_watch_wakes_on_a_new_version_only(snap):
    cache = SnapshotCache()
    first = snap("a")
    cache.set(first)
    watcher = asyncio.ensure_future(cache.watch(_node("n"), known_version=first.version))
    await asyncio.sleep(0.01)
    cache.set(snap("a"))  # same content: nobody wakes
    await asyncio.sleep(0.01)
    assert not watcher.done()
    cache.set(snap("a", "b"))
    got = await asyncio.wait_for(watcher, 1)
    assert got.version == snap("a", "b").version
