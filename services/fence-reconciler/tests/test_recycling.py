"""Recycling of learned hosts (pure domain, fake time).

Covers: with recycling off nothing ever expires; an idle host goes ACTIVE -> EXPIREWAIT (still
rendered, same revision) -> removed (new revision); new traffic brings an EXPIREWAIT host back.
"""

from __future__ import annotations

from lazyload_fence_reconciler import desiring, fences

NOW = 1_700_000_000.0
HOST = "details.default.svc.cluster.local"
POLICY = desiring.Policy(recycle_after=600, expire_wait=300, last_seen_granularity=60)


def _learned_fence(at: float) -> fences.Fence:
    base = fences.Fence.from_raw(fences.new_fence_body("default", "pp"))
    desired = desiring.desire(
        base, [desiring.Edge(HOST, None, at, at)], service_selector=None, now=at, policy=POLICY
    )
    return _with_status(desired.status)


def _with_status(status: dict[str, object]) -> fences.Fence:
    body = fences.new_fence_body("default", "pp")
    body["status"] = status
    return fences.Fence.from_raw(body)


def test_recycling_off_never_expires() -> None:
    fence = _learned_fence(NOW)
    later = desiring.desire(fence, [], service_selector=None, now=NOW + 10**8)
    assert later.state.hosts == (HOST,) and not later.changed


def test_idle_host_expirewait_then_removed() -> None:
    fence = _learned_fence(NOW)
    waiting = desiring.desire(fence, [], service_selector=None, now=NOW + 700, policy=POLICY)
    assert waiting.status["domains"][HOST]["status"] == "EXPIREWAIT"
    assert waiting.state.hosts == (HOST,) and not waiting.changed and waiting.write_needed
    fence = _with_status(waiting.status)
    gone = desiring.desire(fence, [], service_selector=None, now=NOW + 1000, policy=POLICY)
    assert gone.changed and gone.removed == (HOST,) and gone.state.hosts == ()
    assert gone.status["metricStatus"] == {} and gone.status["learned"] == {}


def test_traffic_revives_an_expirewait_host() -> None:
    fence = _with_status(
        desiring.desire(
            _learned_fence(NOW), [], service_selector=None, now=NOW + 700, policy=POLICY
        ).status
    )
    back = desiring.desire(
        fence,
        [desiring.Edge(HOST, None, NOW + 800, NOW + 800)],
        service_selector=None,
        now=NOW + 800,
        policy=POLICY,
    )
    assert back.status["domains"][HOST]["status"] == "ACTIVE" and not back.changed
