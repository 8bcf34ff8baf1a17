"""Failures of the Kubernetes API on the write path (faults injected by the emulator).

Covers: a status write that fails with 500 is retried (the edges are nak'ed, nothing is acked
or published before the write succeeded) and the host arrives; a 409 on the status write is
re-read and re-applied at once, counted as a conflict; a write refused with 422 or 413
dead-letters the edges instead of retrying them forever; a write denied (403, 401) for a while is
retried and the host arrives, nothing dead-lettered (`make faults`' api-403 fault).
"""

from __future__ import annotations

import httpx
import pytest
from lazyload_common import codec, events, subjects

DETAILS = "details.default.svc.cluster.local"
STATUS = r"/servicefences/productpage/status$"


async def test_server_error_is_retried(reconciler, kit, kube_emulator) -> None:
    kit.create_service("productpage")
    await reconciler.start()
    kube_emulator.inject_fault("PUT", STATUS, status=500, count=2)
    async with kit.events(subjects.fence("default", "productpage")) as seen:
        await kit.publish(kit.edge(DETAILS))
        event = await seen.until(lambda e: DETAILS in e.hosts, timeout=15)
    # The watch's own reconcile of the new fence and the redelivered edge both retry after the
    # 500s; whichever writes first takes revision 1 (an empty fence, or the host).
    assert event.revision in (1, 2) and event.added == [DETAILS]
    statuses = [r.status for r in kube_emulator.writes("/status")]
    assert statuses[:3] == [500, 500, 200]


async def test_conflict_is_reapplied(reconciler, kit, kube_emulator) -> None:
    kit.create_service("productpage")
    await reconciler.start()
    kube_emulator.inject_fault("PUT", STATUS, status=409, reason="Conflict", count=1)
    async with kit.events(subjects.fence("default", "productpage")) as seen:
        await kit.publish(kit.edge(DETAILS))
        await seen.until(lambda e: DETAILS in e.hosts)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{reconciler.admin_port}") as http:
        metrics = (await http.get("/metrics")).text
    line = next(x for x in metrics.splitlines() if x.startswith("lazyload_fence_conflicts_total"))
    assert float(line.rsplit(" ", 1)[1]) >= 1


@pytest.mark.parametrize(
    ("status", "reason"),
    [(422, "Invalid"), (413, "RequestEntityTooLarge")],
)
async def test_refused_write_dead_letters(reconciler, kit, kube_emulator, status, reason) -> None:
    """A refusal that no retry can change (an invalid status, one too large) ends the edges with
    the reason instead of retrying them for ever (#19)."""
    kit.create_service("productpage")
    await reconciler.start()
    dlq = await kit.dead_letters()
    kube_emulator.inject_fault("PUT", STATUS, status=status, reason=reason, count=1)
    await kit.publish(kit.edge(DETAILS))
    dead = codec.decode_as((await dlq.next_msg(timeout=10)).data, events.DeadLetter)
    assert "refused" in dead.reason and str(status) in dead.reason
    await dlq.unsubscribe()


@pytest.mark.parametrize(("status", "reason"), [(403, "Forbidden"), (401, "Unauthorized")])
async def test_denied_write_is_retried(reconciler, kit, kube_emulator, status, reason) -> None:
    """RBAC and credentials change under a running service (a Role re-applied, a token
    rotated): a write denied for a while is retried with back-off and the host arrives; nothing
    is dead-lettered (`make faults`, api-403: dead-lettering at the first 403 lost every edge of
    the outage)."""
    kit.create_service("productpage")
    await reconciler.start()
    dlq = await kit.dead_letters()
    kube_emulator.inject_fault("PUT", STATUS, status=status, reason=reason, count=2)
    async with kit.events(subjects.fence("default", "productpage")) as seen:
        await kit.publish(kit.edge(DETAILS))
        await seen.until(lambda e: DETAILS in e.hosts, timeout=30)
    assert [r.status for r in kube_emulator.writes("/status")][:2] == [status, status]
    with pytest.raises(TimeoutError):
        await dlq.next_msg(timeout=0.5)
    await dlq.unsubscribe()
