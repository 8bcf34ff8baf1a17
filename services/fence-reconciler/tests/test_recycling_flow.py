"""Recycling through the periodic resync (emulator and nats-server, real but short times).

Covers: with `recycle_after` and `expire_wait` of one second, a learned host that sees no more
traffic goes EXPIREWAIT (still published as a host) and is then removed, with a new revision.
"""

from __future__ import annotations

from lazyload_common import subjects

DETAILS = "details.default.svc.cluster.local"


async def test_idle_host_is_recycled(reconciler, kit) -> None:
    kit.create_service("productpage")
    await reconciler.start(
        resync_interval=1,
        recycle_after=1,
        expire_wait=1,
        last_seen_granularity=0,
        liveness_source="sidecar-als",
    )
    async with kit.events(subjects.fence("default", "productpage")) as seen:
        await kit.publish(kit.edge(DETAILS))
        await seen.until(lambda e: e.hosts == [DETAILS])

        def waiting() -> bool:
            domains = (kit.fence("productpage") or {}).get("status", {}).get("domains", {})
            return domains.get(DETAILS, {}).get("status") == "EXPIREWAIT"

        await kit.eventually(waiting, timeout=20)
        event = await seen.until(lambda e: e.hosts == [], timeout=20)
    assert event.removed == [DETAILS] and event.revision == 2
