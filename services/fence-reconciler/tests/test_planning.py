"""The reconcile cycle's decisions about one fence name (`planning`, `policies.drop`, and
`deciding.of_cycle`; plain tables, no I/O).

Covers: creating the missing fence of a caller (a Service's or a workload's: one rule with the
same scope, auto-create and tombstone checks first), auto-fence before traffic (never for a
workload), dropping only auto-created fences whose Service or last pod is gone or left the scope;
which copy of a fence is the newest; fences a Service change concerns; fences that vanished
while nobody watched; auto-fence progress lines; what a cycle notes about its hosts.
"""

from __future__ import annotations

import pytest
from lazyload_fence_reconciler import changes, deciding, desiring, fences, planning, policies

L = policies.FENCED_LABEL
SVC = policies.ServiceFacts(labels={}, selector={"app": "a"})
SCOPE = policies.Scope()
CREATE, IGNORE, WAIT = policies.Outcome.CREATE, policies.Outcome.IGNORE, policies.Outcome.WAIT


def facts(**kw: object) -> planning.Facts:
    return planning.Facts(**{"namespace": "ns", **kw})


@pytest.mark.parametrize(
    ("f", "scope", "outcome", "reason"),
    [
        (facts(service=SVC), SCOPE, CREATE, ""),
        (facts(service=None), SCOPE, WAIT, "service not found"),
        (facts(workload_pods=2), SCOPE, CREATE, ""),
        (facts(workload_pods=0), SCOPE, WAIT, "service not found (no labelled pod either)"),
        # the three checks a Service's and a workload's caller share come first
        (facts(service=SVC), policies.Scope(auto_create=False), IGNORE, "auto-create is off"),
        (facts(workload_pods=2), policies.Scope(auto_create=False), IGNORE, "auto-create is off"),
        (
            facts(workload_pods=2),
            policies.Scope(deny_namespaces=("ns",)),
            IGNORE,
            "namespace ns is out of scope",
        ),
        (
            facts(service=None, tombstoned=True),
            SCOPE,
            IGNORE,
            "a manual fence of this name was deleted",
        ),
        (
            facts(workload_pods=0, tombstoned=True),
            SCOPE,
            IGNORE,
            "a manual fence of this name was deleted",
        ),
        (facts(service=SVC, namespace_labels={L: "false"}), SCOPE, IGNORE, f"not fenced ({L})"),
        # a workload caller needs no Service and its Service's labels do not count
        (facts(service=SVC, namespace_labels={L: "false"}, workload_pods=1), SCOPE, CREATE, ""),
    ],
)
def test_creation(f, scope, outcome, reason) -> None:
    assert planning.creation(f, scope) == policies.Verdict(outcome, reason)


@pytest.mark.parametrize(
    ("f", "scope", "expected"),
    [
        (facts(service=SVC), SCOPE, False),  # default-fenced only: waits for traffic
        (facts(service=SVC), policies.Scope(eager=True), True),
        (
            facts(service=policies.ServiceFacts(labels={L: "true"}, selector={"a": "b"})),
            SCOPE,
            True,
        ),
        (facts(service=SVC, namespace_labels={L: "true"}), SCOPE, True),
        (facts(service=SVC, tombstoned=True), policies.Scope(eager=True), False),
        (facts(service=None, workload_pods=3), policies.Scope(eager=True), False),
    ],
)
def test_eager(f, scope, expected) -> None:
    assert planning.eager(f, scope) is expected


def _fence(*, auto: bool) -> fences.Fence:
    body = fences.new_fence_body("ns", "a")
    if not auto:
        body["metadata"]["labels"] = {}
    fence = fences.Fence.from_raw(body)
    assert fence.created_by_controller is auto
    return fence


@pytest.mark.parametrize(
    ("auto", "f", "scope", "expected"),
    [
        (True, facts(service=SVC), SCOPE, False),
        (True, facts(service=None), SCOPE, True),
        (False, facts(service=None), SCOPE, False),  # a manual fence is never deleted
        (True, facts(service=SVC, namespace_labels={L: "false"}), SCOPE, True),
        (True, facts(service=SVC), policies.Scope(deny_namespaces=("ns",)), True),
        (True, facts(service=policies.ServiceFacts(labels={}, selector={})), SCOPE, True),
        (True, facts(workload_pods=1), SCOPE, False),
        (True, facts(workload_pods=0), SCOPE, True),
        (False, facts(workload_pods=0), SCOPE, False),
        (True, facts(workload_pods=1), policies.Scope(allow_namespaces=("other",)), True),
    ],
)
def test_drop(auto, f, scope, expected) -> None:
    assert planning.drop(_fence(auto=auto), f, scope) is expected


def _obj(uid: str, rv: str) -> dict[str, object]:
    return {"metadata": {"namespace": "ns", "name": "a", "uid": uid, "resourceVersion": rv}}


@pytest.mark.parametrize(
    ("stored", "written", "expected"),
    [
        (None, None, None),
        (_obj("u", "5"), None, _obj("u", "5")),
        (None, _obj("u", "5"), _obj("u", "5")),
        (_obj("u", "5"), _obj("u", "7"), _obj("u", "7")),
        (_obj("u", "7"), _obj("u", "5"), _obj("u", "7")),
        (_obj("u", "5"), _obj("v", "9"), _obj("u", "5")),  # another incarnation: the store's
        (_obj("u", "x"), _obj("u", "5"), _obj("u", "5")),  # not a number: ours
    ],
)
def test_newest(stored, written, expected) -> None:
    assert planning.newest(stored, written) == expected


def test_superseded_when_the_store_caught_up() -> None:
    assert planning.superseded(_obj("u", "5"), _obj("u", "5"))
    assert planning.superseded(_obj("u", "5"), _obj("u", "6"))
    assert not planning.superseded(_obj("u", "6"), _obj("u", "5"))


def test_serves_and_istio_revision() -> None:
    canary = {"metadata": {"labels": {fences.REVISION_LABEL: "canary"}}}
    assert planning.istio_revision(canary) == "canary" and planning.istio_revision({}) == ""
    assert planning.serves(canary, "canary", strict=True)
    assert not planning.serves(canary, "stable", strict=False)


def test_selector_fences() -> None:
    objs = [
        {"metadata": {"namespace": "ns", "name": "a"}, "spec": {"labelSelector": [{"x": "y"}]}},
        {"metadata": {"namespace": "ns", "name": "b"}, "spec": {}},
        {"metadata": {"namespace": "ns", "name": "c"}},
    ]
    assert planning.selector_fences(objs) == [("ns", "a")]


def test_vanished_fences_are_announced_from_what_was_sent() -> None:
    state = desiring.State(revision=1, enabled=True, workload_selector=None, hosts=())
    sent = {
        ("ns", "kept"): changes.Sent("u1", state),
        ("ns", "gone"): changes.Sent("u2", state),
        ("ns", "announced"): changes.Sent("u3", state, deleted=True),
    }
    assert planning.vanished(sent, {("ns", "kept")}) == [("ns", "gone")]
    stub = planning.stub(("ns", "gone"), "u2")
    assert fences.Fence.from_raw(stub).key == ("ns", "gone")


@pytest.mark.parametrize(
    ("total", "left", "due"),
    [(100, 90, True), (100, 95, False), (100, 0, True), (5, 3, True), (25, 19, False)],
)
def test_progress_due(total, left, due) -> None:
    assert planning.progress_due(total, left) is due


A, B, C = (f"{x}.ns.svc.cluster.local" for x in "abc")


@pytest.mark.parametrize(
    ("reset", "before_reasons", "removed_reason"),
    [
        (True, {B: ("learned",)}, "reset"),
        (False, {B: ("learned",)}, "expired: no traffic within the recycling time"),
        (False, {B: ("spec",)}, "no longer in spec, selector or expansion"),
    ],
)
def test_of_cycle(reset, before_reasons, removed_reason) -> None:
    state = desiring.State(revision=2, enabled=True, workload_selector=None, hosts=(A,))
    desired = desiring.Desired(
        state=state, status={}, changed=True, write_needed=True, removed=(B,), capped=(C,)
    )
    before = desiring.State(
        revision=1, enabled=True, workload_selector=None, hosts=(B,), reasons=before_reasons
    )
    edges = [desiring.Edge(A), desiring.Edge(C)]
    notes = deciding.of_cycle(edges, desired, before, reset=reset, max_learned_hosts=1)
    assert notes == [
        (A, deciding.LEARNED, "learned from traffic"),
        (C, deciding.CAPPED, "the fence is at its cap of 1 learned hosts"),
        (B, deciding.REMOVED, removed_reason),
    ]
