"""Static hosts from spec and compatibility with fences written by Slime (pure domain).

Covers: spec.host keys (full hosts and `ns/*`) are domains with reason `spec`; a deadline in the
past is EXPIRE and not rendered; the deprecated auto strategy; invalid keys are ignored and named
in the SpecValid condition; a host both learned and static has both reasons; a fence written by
Slime (int domain status, metricStatus only) is read, its metricStatus hosts become learned, and
unknown status fields survive; enabling/disabling is a new revision.
"""

from __future__ import annotations

import pytest
from lazyload_fence_reconciler import desiring, fences

NOW = 1_700_000_000.0
DETAILS = "details.default.svc.cluster.local"


def _fence(spec: dict[str, object], status: dict[str, object] | None = None) -> fences.Fence:
    return fences.Fence.from_raw(
        {
            "metadata": {"namespace": "default", "name": "productpage", "generation": 3},
            "spec": {"enable": True, **spec},
            "status": status or {},
        }
    )


def test_spec_hosts_are_domains_with_reason_spec() -> None:
    fence = _fence({"host": {"reviews.default.svc.cluster.local": {"stable": {}}, "test/*": {}}})
    desired = desiring.desire(fence, [], service_selector=None, now=NOW)
    assert desired.state.hosts == ("reviews.default.svc.cluster.local", "test/*")
    assert desired.status["domains"]["test/*"] == {"hosts": [], "status": "ACTIVE"}
    assert desired.state.reasons["test/*"] == ("spec",)
    assert desired.status["observedGeneration"] == 3
    assert desired.status["conditions"][-1]["status"] == "True"


def test_deadline_in_the_past_expires_the_host() -> None:
    fence = _fence(
        {
            "host": {
                "old.example.com": {"deadline": {"expire": {"seconds": int(NOW) - 10}}},
                "new.example.com": {"deadline": {"expire": {"seconds": int(NOW) + 10}}},
            }
        }
    )
    desired = desiring.desire(fence, [], service_selector=None, now=NOW)
    assert desired.status["domains"]["old.example.com"]["status"] == "EXPIRE"
    assert desired.state.hosts == ("new.example.com",)


def test_auto_strategy_expires_after_its_duration() -> None:
    strategy = {
        "auto": {"duration": {"seconds": 60}},
        "RecentlyCalled": {"seconds": int(NOW) - 120},
    }
    desired = desiring.desire(
        _fence({"host": {"a.example.com": strategy}}), [], service_selector=None, now=NOW
    )
    assert desired.status["domains"]["a.example.com"]["status"] == "EXPIRE"


def test_invalid_spec_keys_are_ignored_and_reported() -> None:
    fence = _fence({"host": {"Bad_Host:80": {}, "ok.example.com": {}}})
    desired = desiring.desire(fence, [], service_selector=None, now=NOW)
    assert desired.state.hosts == ("ok.example.com",)
    assert desired.invalid_spec_hosts == ("Bad_Host:80",)
    condition = desired.status["conditions"][-1]
    assert condition["status"] == "False" and "Bad_Host:80" in condition["message"]


def test_learned_and_static_host_has_both_reasons() -> None:
    fence = _fence({"host": {DETAILS: {}}})
    edge = desiring.Edge(DETAILS, 9080, NOW, NOW)
    desired = desiring.desire(fence, [edge], service_selector=None, now=NOW)
    assert desired.state.reasons[DETAILS] == ("learned", "spec")


def test_slime_written_fence_is_read_and_upgraded() -> None:
    slime_status = {
        "metricStatus": {
            f'{{destination_service="{DETAILS}"}}': "3",
            '{request_host="www.example.com"}': "1",
            "some-other-key": "x",
        },
        "domains": {
            DETAILS: {"hosts": [DETAILS]},
            "gone.default.svc.cluster.local": {
                "hosts": ["gone.default.svc.cluster.local"],
                "status": 2,
            },
        },
        "visitor": {"x": True},
    }
    fence = _fence({"workloadSelector": {"fromService": True}}, slime_status)
    assert fence.domains["gone.default.svc.cluster.local"].status is fences.DomainStatus.EXPIREWAIT
    assert fence.revision == 0
    desired = desiring.desire(fence, [], service_selector={"app": "pp"}, now=NOW)
    assert desired.changed and desired.state.revision == 1
    assert desired.state.hosts == (DETAILS, "www.example.com")
    assert desired.status["visitor"] == {"x": True}
    assert desired.status["metricStatus"][f'{{destination_service="{DETAILS}"}}'] == "3"
    assert desired.status["metricStatus"]["some-other-key"] == "x"
    assert set(desired.status["learned"]) == {DETAILS, "www.example.com"}
    assert "gone.default.svc.cluster.local" in desired.removed


def test_domain_status_reads_ints_names_and_garbage() -> None:
    parse = fences.DomainStatus.parse
    assert (
        parse(0) is parse(None) is parse("ACTIVE") is parse("weird") is fences.DomainStatus.ACTIVE
    )
    assert parse(1) is parse("EXPIRE") is parse("1") is fences.DomainStatus.EXPIRE
    assert parse(2) is parse("expirewait") is fences.DomainStatus.EXPIREWAIT


def test_times_read_rfc3339_and_unix() -> None:
    assert fences.parse_time("2023-11-14T22:13:20Z") == NOW
    assert fences.parse_time(NOW) == NOW
    assert fences.parse_time(str(int(NOW))) == NOW
    assert fences.parse_time("soon") is None
    assert fences.format_time(NOW) == "2023-11-14T22:13:20Z"


@pytest.mark.parametrize(
    "stored", [-1, "-62167219200", "0000-01-01T00:00:00Z", 1e20, float("nan"), float("inf")]
)
def test_impossible_stored_times_are_not_read(stored: object) -> None:
    """A hand-edited status time that `format_time` could not write back is no time at all."""
    assert fences.parse_time(stored) is None
    learned = fences.Learned.from_raw("a.example.com", {"firstSeen": stored}, default_time=NOW)
    assert learned.to_raw()["firstSeen"] == "2023-11-14T22:13:20Z"


def test_disabling_is_a_new_revision() -> None:
    fence = _fence({})
    first = desiring.desire(fence, [], service_selector=None, now=NOW)
    written = fences.Fence.from_raw(
        {
            "metadata": {"namespace": "default", "name": "productpage", "generation": 4},
            "spec": {"enable": False},
            "status": first.status,
        }
    )
    second = desiring.desire(written, [], service_selector=None, now=NOW)
    assert second.changed and second.state.revision == 2 and not second.state.enabled


def test_next_change_is_the_earliest_future_deadline() -> None:
    fence = _fence(
        {
            "host": {
                "old.example.com": {"deadline": {"expire": {"seconds": int(NOW) - 10}}},
                "soon.example.com": {"deadline": {"expire": {"seconds": int(NOW) + 30}}},
                "late.example.com": {"deadline": {"expire": {"seconds": int(NOW) + 90}}},
                "stable.example.com": {"stable": {}},
            }
        }
    )
    assert desiring.desire(fence, [], service_selector=None, now=NOW).next_change == NOW + 30
    stable = _fence({"host": {"stable.example.com": {"stable": {}}}})
    assert desiring.desire(stable, [], service_selector=None, now=NOW).next_change is None


def test_next_change_follows_recycling_of_learned_hosts() -> None:
    policy = desiring.Policy(recycle_after=100.0, expire_wait=50.0)
    edge = desiring.Edge(host=DETAILS, first_seen=NOW - 10, observed_at=NOW - 10)
    desired = desiring.desire(_fence({}), [edge], service_selector=None, now=NOW, policy=policy)
    assert desired.next_change == NOW - 10 + 100  # ACTIVE -> EXPIREWAIT
    later = NOW + 95  # EXPIREWAIT now: the next change is the removal
    desired = desiring.desire(_fence({}), [edge], service_selector=None, now=later, policy=policy)
    assert desired.next_change == NOW - 10 + 150
