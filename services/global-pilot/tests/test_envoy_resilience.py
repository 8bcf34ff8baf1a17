"""A real Envoy under bad updates, and several Envoy replicas on one global-pilot.

Covers: a snapshot holding a cluster Envoy rejects (a negative connect timeout) is NACKed, the
NACK is counted by global-pilot (stats and the Prometheus counter) and by Envoy (`cluster_manager.cds.update_rejected`), the last
good config keeps serving, and the next good snapshot is taken; two Envoy replicas (different
node ids, the same default snapshot) are served at once and both get a push.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from google.protobuf import duration_pb2
from lazyload_global_pilot import bootstrap, rendering, resources
from lazyload_global_pilot.mesh import MeshState
from lazyload_global_pilot.snapshots import Snapshot
from prometheus_client import REGISTRY

pytestmark = pytest.mark.envoy
DETAILS = "details.default.svc.cluster.local:9080"


async def _until(check, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def _nack_count() -> float:
    sample = REGISTRY.get_sample_value(
        "lazyload_global_pilot_xds_requests_total", {"type": "Cluster", "outcome": "nack"}
    )
    return sample or 0.0


async def test_bad_update_is_nacked_and_the_last_good_config_keeps_serving(
    sidecar, upstream_factory, make_service
):
    details, ratings = upstream_factory("details"), upstream_factory("ratings")
    good = make_service("details", endpoints=(("127.0.0.1", details.port),))
    sidecar.set_mesh(good)
    await sidecar.eventually(DETAILS)
    content = {
        t: dict(byname)
        for t, byname in rendering.render(MeshState.of([good]), sidecar.options).items()
    }
    content[resources.CLUSTER]["bad"] = cluster_pb2.Cluster(
        name="bad",
        type=cluster_pb2.Cluster.STATIC,
        connect_timeout=duration_pb2.Duration(seconds=-1),
    )
    before = _nack_count()
    sidecar.xds.cache.set(Snapshot.of(content))

    async def nacked() -> bool:
        stats = await sidecar.envoy.stats("cluster_manager.cds.update_rejected")
        return (
            sidecar.xds.ads.stats.nacks >= 1
            and stats.get("cluster_manager.cds.update_rejected", 0) >= 1
        )

    await _until(nacked)
    assert _nack_count() > before
    assert (await sidecar.get(DETAILS)).text.startswith("details")
    clusters = await sidecar.envoy.config_dump("dynamic_active_clusters")
    # Names, not the dump's text: a version hash may contain "bad".
    names = [c["cluster"]["name"] for c in clusters["configs"]]
    assert "bad" not in names and "outbound|9080||details.default.svc.cluster.local" in names
    # the next good snapshot is accepted
    nacks = sidecar.xds.ads.stats.nacks
    sidecar.set_mesh(good, make_service("ratings", endpoints=(("127.0.0.1", ratings.port),)))
    assert (await sidecar.eventually("ratings.default:9080")).text.startswith("ratings")
    assert sidecar.xds.ads.stats.nacks == nacks


async def test_several_replicas_are_served_at_once(
    sidecar, envoy_runner, upstream_factory, make_service
):
    details, ratings = upstream_factory("details"), upstream_factory("ratings")
    first = make_service("details", endpoints=(("127.0.0.1", details.port),))
    sidecar.set_mesh(first)
    replica = await envoy_runner(
        bootstrap.render_bootstrap(
            xds_host="127.0.0.1", xds_port=sidecar.xds.port, node_id="test-sidecar-2"
        )
    )
    assert sidecar.xds.ads.stats.streams_open == 2
    sidecar.set_mesh(first, make_service("ratings", endpoints=(("127.0.0.1", ratings.port),)))
    name = "outbound|9080||ratings.default.svc.cluster.local"
    for envoy in (sidecar.envoy, replica):

        async def has_ratings(envoy=envoy) -> bool:
            return name in str(await envoy.config_dump("dynamic_active_clusters"))

        await _until(has_ratings)
    assert (await sidecar.eventually("ratings.default:9080")).text.startswith("ratings")
    assert sidecar.xds.ads.stats.nacks == 0
