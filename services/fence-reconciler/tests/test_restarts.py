"""Nothing is lost across restarts and replicas (nats-server and the emulator).

Covers: edges published while the reconciler is down are learned when it comes back, and
what was already published is not published again; a revision written but never published (a
crash between the write and the publish) is published at start-up; a fence deleted while the
reconciler was down is announced deleted at start-up; two replicas sharing the durable consumer
learn every edge of one fence (optimistic concurrency on the status) with one event per revision.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from lazyload_common import subjects

DETAILS = "details.default.svc.cluster.local"
REVIEWS = "reviews.default.svc.cluster.local"
PATH = "/apis/microservice.slime.io/v1alpha1/namespaces/default/servicefences"


@contextlib.asynccontextmanager
async def _learned_then_stopped(reconciler, kit) -> AsyncIterator[Any]:
    """productpage's fence events, once the reconciler learned DETAILS (revision 1) and stopped."""
    kit.create_service("productpage")
    async with kit.events(subjects.fence("default", "productpage")) as seen:
        await reconciler.start()
        await kit.publish(kit.edge(DETAILS))
        await seen.until(lambda e: e.revision == 1)
        await reconciler.stop()
        yield seen


async def test_restart_loses_nothing_and_repeats_nothing(reconciler, kit) -> None:
    async with _learned_then_stopped(reconciler, kit) as seen:
        await kit.publish(kit.edge(REVIEWS))
        await reconciler.start()
        event = await seen.until(lambda e: REVIEWS in e.hosts)
        assert event.revision == 2 and event.added == [REVIEWS]
        assert [e.revision for e in await seen.drain()] == [1, 2]


async def test_unpublished_revision_is_published_at_start(reconciler, kit) -> None:
    async with _learned_then_stopped(reconciler, kit) as seen:
        # What a crash between the status write and the publish leaves behind:
        fence = kit.fence("productpage")
        fence["status"]["revision"] = 2
        fence["status"]["domains"][REVIEWS] = {"hosts": [REVIEWS], "status": "ACTIVE"}
        fence["status"]["metricStatus"][f'{{destination_service="{REVIEWS}"}}'] = "1"
        fence["status"]["learned"][REVIEWS] = dict(fence["status"]["learned"][DETAILS])
        kit.api.replace(f"{PATH}/productpage/status", fence)
        await reconciler.start()
        event = await seen.until(lambda e: e.revision == 2)
        assert REVIEWS in event.hosts and event.added == [REVIEWS]
        assert [e.revision for e in await seen.drain()] == [1, 2]


async def test_fence_deleted_while_down_is_announced(reconciler, kit) -> None:
    async with _learned_then_stopped(reconciler, kit) as seen:
        kit.api.delete(f"{PATH}/productpage")
        await reconciler.start()
        event = await seen.until(lambda e: e.deleted)
        assert event.revision == 2 and event.removed == [DETAILS]


async def test_two_replicas_learn_everything(reconciler, kit) -> None:
    kit.create_service("productpage")
    await asyncio.gather(reconciler.start(batch=5), reconciler.start(batch=5))
    hosts = [f"h{i}.default.svc.cluster.local" for i in range(40)]
    async with kit.events(subjects.fence("default", "productpage")) as seen:
        await kit.publish(*(kit.edge(h) for h in hosts))
        await seen.until(lambda e: len(e.hosts) == 40, timeout=20)
        published = await seen.drain()
    revisions = [e.revision for e in published]
    assert len(revisions) == len(set(revisions)), revisions
    fence = kit.fence("productpage")
    assert sorted(fence["status"]["learned"]) == sorted(hosts)
    assert fence["status"]["revision"] == max(revisions)
