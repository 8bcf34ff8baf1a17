"""The start-up seed reads the last fence event of every subject in a few round trips.

A cold restart at 10,000 fences used to ask the stream for the last message of each subject
one by one (`get_last_msg`, one round trip per fence: seconds before /readyz). The seed is now
one pass of a `LAST_PER_SUBJECT` consumer; this pins both the result and the cost.
"""

from __future__ import annotations

import uuid
from typing import Any

from lazyload_common import events, jetstream, subjects
from lazyload_fence_reconciler import publishing

FENCES = 120
REVISIONS = 3


async def test_seed_returns_the_last_event_of_each_fence_without_a_lookup_per_subject(
    js: Any, monkeypatch: Any
) -> None:
    ns = f"seed-{uuid.uuid4().hex[:8]}"
    for revision in range(1, REVISIONS + 1):
        for i in range(FENCES):
            event = events.FenceChanged(
                namespace=ns,
                name=f"svc-{i}",
                uid=f"uid-{i}",
                revision=revision,
                hosts=[f"h{revision}.{ns}.svc.cluster.local"],
            )
            await jetstream.publish(js, subjects.fence(ns, f"svc-{i}"), event)

    async def one_per_subject(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the seed must not read the stream subject by subject")

    monkeypatch.setattr(js, "get_last_msg", one_per_subject)
    before = {c.name for c in await js.consumers_info(subjects.FENCES_STREAM)}
    seeded = [e for e in await publishing.Publisher(js).last_events(batch=50) if e.namespace == ns]

    assert sorted(e.name for e in seeded) == sorted(f"svc-{i}" for i in range(FENCES))
    assert {e.revision for e in seeded} == {REVISIONS}
    assert all(e.hosts == [f"h{REVISIONS}.{ns}.svc.cluster.local"] for e in seeded)
    # the ephemeral seed consumer is gone afterwards
    after = {c.name for c in await js.consumers_info(subjects.FENCES_STREAM)}
    assert after <= before


async def test_seed_ignores_events_whose_names_no_fence_can_have(js: Any) -> None:
    """An event on the fence stream is only the word of whoever could publish there: the seed
    acts on it (a fence it believes deleted is announced and its tombstone refreshed, through API
    paths made of its namespace and name), so names that no ServiceFence can have are ignored
    (#16)."""
    ns = f"seed-{uuid.uuid4().hex[:8]}"
    kept = events.FenceChanged(namespace=ns, name="web", uid="uid-web", revision=1)
    forged = [
        events.FenceChanged(namespace="../etc", name="web", revision=1),
        events.FenceChanged(namespace=ns, name="a/../../b", revision=1),
    ]
    for event in (kept, *forged):
        await jetstream.publish(js, f"{subjects.FENCE_PREFIX}.{ns}.x{id(event)}", event)
    seeded = [e for e in await publishing.Publisher(js).last_events() if ns in e.namespace + e.name]
    assert seeded == [kept]
