"""Lost JetStream state: the reconciler sets its consumer and the streams it uses up again.

An operator deletes the reconciler's durable consumer, then the LAZYLOAD_FENCES stream: `fetch`
failed with a JetStream API error that ended the consumer task (the service stopped, exit code
0), and fence events could never be published again (#19). Now the consumer is created again
and learning goes on, and a publish that finds no stream creates it again.
"""

from __future__ import annotations

from lazyload_common import codec, events, subjects

DETAILS = "details.default.svc.cluster.local"
REVIEWS = "reviews.default.svc.cluster.local"
RATINGS = "ratings.default.svc.cluster.local"


async def test_a_deleted_consumer_and_fence_stream_are_set_up_again(reconciler, kit) -> None:
    kit.create_service("productpage")
    await reconciler.start()
    subject = subjects.fence("default", "productpage")

    async def last_hosts() -> list[str]:
        try:
            msg = await kit.js.get_last_msg(subjects.FENCES_STREAM, subject)
        except Exception:  # no stream, or no event yet
            return []
        return codec.decode_as(msg.data or b"", events.FenceChanged).hosts

    async def has(host: str) -> bool:
        return host in await last_hosts()

    await kit.publish(kit.edge(DETAILS))
    await _eventually(lambda: has(DETAILS))
    await kit.js.delete_consumer(subjects.DEPS_STREAM, "fence-reconciler")
    await kit.publish(kit.edge(REVIEWS))
    await _eventually(lambda: has(REVIEWS))
    await kit.js.delete_stream(subjects.FENCES_STREAM)
    await kit.publish(kit.edge(RATINGS))
    await _eventually(lambda: has(RATINGS))
    assert await last_hosts() == [DETAILS, RATINGS, REVIEWS]
    info = await kit.js.stream_info(subjects.FENCES_STREAM)
    assert info.config.max_msgs_per_subject == 100  # lazyload's own configuration
    fence = kit.fence("productpage")
    assert fence is not None and sorted(fence["status"]["learned"]) == [DETAILS, RATINGS, REVIEWS]


async def _eventually(check, timeout: float = 15.0) -> None:
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {timeout}s")
        await asyncio.sleep(0.05)
