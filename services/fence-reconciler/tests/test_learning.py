"""Learning hosts into a fence (pure domain, no I/O).

Covers: a learned host lands in Slime's metricStatus and domains and in lazyload's `learned`;
the first computation of a fence is revision 1; a new host bumps the revision, a known host does
not; repeated edges inside the lastSeen granularity need no write; the workload selector follows
Slime's priority; reasons per host; reset empties what was learned but keeps spec hosts.
"""

from __future__ import annotations

from lazyload_fence_reconciler import desiring, fences

NOW = 1_700_000_000.0
DETAILS = "details.default.svc.cluster.local"
REVIEWS = "reviews.default.svc.cluster.local"


def _fence(**status: object) -> fences.Fence:
    body = fences.new_fence_body("default", "productpage")
    body["metadata"]["uid"] = "u1"
    body["status"] = status
    return fences.Fence.from_raw(body)


def _apply(fence: fences.Fence, desired: desiring.Desired) -> fences.Fence:
    """The fence as the API server returns it after the status write."""
    return fences.Fence.from_raw(
        {
            "metadata": {"namespace": fence.namespace, "name": fence.name, "uid": fence.uid},
            "spec": {
                "enable": fence.enable,
                "workloadSelector": {"fromService": fence.from_service},
                "host": {k: {} for k in fence.spec_hosts},
            },
            "status": desired.status,
        }
    )


def _edge(host: str, at: float = NOW, port: int | None = 9080) -> desiring.Edge:
    return desiring.Edge(host=host, port=port, first_seen=at, observed_at=at)


SELECTOR = {"app": "productpage"}


def test_learned_host_is_written_in_slime_and_lazyload_format() -> None:
    desired = desiring.desire(_fence(), [_edge(DETAILS)], service_selector=SELECTOR, now=NOW)
    status = desired.status
    assert status["metricStatus"] == {f'{{destination_service="{DETAILS}"}}': "1"}
    assert status["domains"] == {DETAILS: {"hosts": [DETAILS], "status": "ACTIVE"}}
    assert status["learned"][DETAILS]["lastSeen"] == "2023-11-14T22:13:20Z"
    assert status["learned"][DETAILS]["port"] == 9080
    assert status["revision"] == 1
    assert status["enabled"] is True
    assert status["workloadSelector"] == SELECTOR
    assert status["hostCount"] == 1
    assert desired.changed and desired.write_needed
    assert desired.state.hosts == (DETAILS,)
    assert desired.added == (DETAILS,) and desired.removed == ()
    assert desired.state.reasons == {DETAILS: ("learned",)}


def test_first_computation_of_an_empty_fence_is_revision_one() -> None:
    desired = desiring.desire(_fence(), [], service_selector=SELECTOR, now=NOW)
    assert desired.changed and desired.state.revision == 1 and desired.state.hosts == ()


def test_new_host_bumps_revision_known_host_does_not() -> None:
    first = desiring.desire(_fence(), [_edge(DETAILS)], service_selector=SELECTOR, now=NOW)
    fence = _apply(_fence(), first)
    again = desiring.desire(
        fence, [_edge(DETAILS, NOW + 1)], service_selector=SELECTOR, now=NOW + 1
    )
    assert not again.changed and not again.write_needed
    assert again.state.revision == 1
    more = desiring.desire(fence, [_edge(REVIEWS, NOW + 2)], service_selector=SELECTOR, now=NOW + 2)
    assert more.changed and more.state.revision == 2
    assert more.state.hosts == (DETAILS, REVIEWS)
    assert more.added == (REVIEWS,)


def test_last_seen_moves_only_past_the_granularity() -> None:
    policy = desiring.Policy(last_seen_granularity=60)
    fence = _apply(
        _fence(), desiring.desire(_fence(), [_edge(DETAILS)], service_selector=SELECTOR, now=NOW)
    )
    later = desiring.desire(
        fence, [_edge(DETAILS, NOW + 120)], service_selector=SELECTOR, now=NOW + 120, policy=policy
    )
    assert later.write_needed and not later.changed
    assert later.status["learned"][DETAILS]["lastSeen"] == fences.format_time(NOW + 120)
    assert later.status["learned"][DETAILS]["firstSeen"] == fences.format_time(NOW)


def test_many_edges_in_one_batch_make_one_status() -> None:
    edges = [_edge(f"h{i}.default.svc.cluster.local") for i in range(50)]
    desired = desiring.desire(_fence(), edges, service_selector=SELECTOR, now=NOW)
    assert len(desired.state.hosts) == 50 and desired.state.revision == 1


def test_workload_selector_priority() -> None:
    fence = _fence()
    assert desiring.workload_selector(fence, SELECTOR) == SELECTOR
    assert desiring.workload_selector(fence, None) is None
    assert desiring.workload_selector(fence, {}) is None
    labelled = fences.Fence.from_raw(
        {
            "metadata": {"namespace": "default", "name": "x"},
            "spec": {"workloadSelector": {"labels": {"group": "foo"}, "fromService": True}},
        }
    )
    assert desiring.workload_selector(labelled, SELECTOR) == {"group": "foo"}
    # Neither labels nor fromService: Slime's fallback, {<service label>: <fence name>}.
    plain = fences.Fence.from_raw({"metadata": {"namespace": "default", "name": "x"}, "spec": {}})
    assert desiring.workload_selector(plain, SELECTOR) == {"app": "x"}
    assert desiring.workload_selector(plain, None, service_label="svc") == {"svc": "x"}
    assert desiring.workload_selector(plain, SELECTOR, service_label="") is None


def test_manual_fence_without_selector_renders_with_the_fallback() -> None:
    manual = fences.Fence.from_raw(
        {
            "metadata": {"namespace": "default", "name": "ratings"},
            "spec": {"enable": True, "host": {DETAILS: {"stable": {}}}},
        }
    )
    desired = desiring.desire(manual, [], service_selector=None, now=NOW)
    assert desired.state.workload_selector == {"app": "ratings"}
    assert DETAILS in desired.state.hosts
    policy = desiring.Policy(service_label="")
    off = desiring.desire(manual, [], service_selector=None, now=NOW, policy=policy)
    assert off.state.workload_selector is None


def test_selector_change_is_a_new_revision_without_host_change() -> None:
    fence = _apply(
        _fence(), desiring.desire(_fence(), [_edge(DETAILS)], service_selector=SELECTOR, now=NOW)
    )
    moved = desiring.desire(fence, [], service_selector={"app": "pp-v2"}, now=NOW)
    assert moved.changed and moved.state.revision == 2
    assert moved.added == () and moved.removed == ()
    assert moved.status["workloadSelector"] == {"app": "pp-v2"}


def test_service_gone_removes_the_selector_from_status() -> None:
    fence = _apply(_fence(), desiring.desire(_fence(), [], service_selector=SELECTOR, now=NOW))
    gone = desiring.desire(fence, [], service_selector=None, now=NOW)
    assert gone.changed and "workloadSelector" not in gone.status
    assert gone.state.workload_selector is None


def test_reset_empties_learned_hosts_and_keeps_spec_hosts() -> None:
    body = fences.new_fence_body("default", "productpage")
    body["spec"]["host"] = {"test/*": {}}
    fence = fences.Fence.from_raw(body)
    fence = _apply(
        fence, desiring.desire(fence, [_edge(DETAILS)], service_selector=SELECTOR, now=NOW)
    )
    assert fence.revision == 1
    reset = desiring.desire(fence, [], service_selector=SELECTOR, now=NOW, reset=True)
    assert reset.changed and reset.state.hosts == ("test/*",)
    assert reset.removed == (DETAILS,)
    assert reset.status["metricStatus"] == {} and reset.status["learned"] == {}
    assert reset.state.reasons == {"test/*": ("spec",)}


def test_a_packed_status_reads_back_the_same() -> None:
    status = {
        "learned": {"a.default.svc.cluster.local": {"firstSeen": "2026-11-26T01:25:41Z"}},
        "domains": {"a.default.svc.cluster.local": {"hosts": ["a"], "status": "ACTIVE"}},
        "revision": 3,
        "enabled": True,
    }
    raw = {"metadata": {"namespace": "default", "name": "pp", "uid": "u1"}, "status": status}
    packed = fences.pack_status(raw)
    assert isinstance(packed["status"], fences.PackedStatus)
    assert len(packed["status"]) < len(str(status))
    assert fences.Fence.from_raw(packed) == fences.Fence.from_raw(raw)
    assert fences.status_of(packed) == status and raw["status"] is status  # raw untouched
    assert fences.pack_status({"metadata": {}}) == {"metadata": {}}  # no status: as it is


def test_the_learned_host_cap_refuses_new_hosts_and_says_so() -> None:
    policy = desiring.Policy(max_learned_hosts=3)
    first = [_edge(f"h{i}.default.svc.cluster.local") for i in range(2)]
    fence = _apply(_fence(), desiring.desire(_fence(), first, service_selector=SELECTOR, now=NOW))
    more = [_edge(f"h{i}.default.svc.cluster.local") for i in range(2, 6)]
    desired = desiring.desire(fence, more, service_selector=SELECTOR, now=NOW, policy=policy)
    assert desired.capped == (
        "h3.default.svc.cluster.local",
        "h4.default.svc.cluster.local",
        "h5.default.svc.cluster.local",
    )
    assert len(desired.status["learned"]) == 3  # the two it had, and one more
    cap = {c["type"]: c for c in desired.status["conditions"]}["HostCapReached"]
    assert cap["status"] == "True" and "h3.default.svc.cluster.local" in cap["message"]
    # Still at the cap with nothing new: the condition stays True; after a reset it is False.
    fence = _apply(fence, desired)
    again = desiring.desire(fence, [], service_selector=SELECTOR, now=NOW + 1, policy=policy)
    assert {c["type"]: c for c in again.status["conditions"]}["HostCapReached"]["status"] == "True"
    reset = desiring.desire(
        fence, [], service_selector=SELECTOR, now=NOW + 2, policy=policy, reset=True
    )
    assert {c["type"]: c for c in reset.status["conditions"]}["HostCapReached"]["status"] == "False"
    uncapped = desiring.desire(fence, more, service_selector=SELECTOR, now=NOW)
    assert uncapped.capped == () and len(uncapped.status["learned"]) == 6
