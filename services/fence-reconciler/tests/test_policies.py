"""Who gets a fence (pure): label precedence Service > Namespace > default, namespace scope,
auto-create off, Services without selector, deleted manual fences, missing Services wait."""

from __future__ import annotations

import pytest
from lazyload_fence_reconciler import policies

SCOPE = policies.Scope()
SVC = policies.ServiceFacts(labels={}, selector={"app": "a"})
L = policies.FENCED_LABEL


@pytest.mark.parametrize(
    ("service", "namespace", "default", "expected"),
    [
        ({L: "true"}, {L: "false"}, False, True),
        ({L: "false"}, {L: "true"}, True, False),
        ({}, {L: "true"}, False, True),
        ({}, {L: "false"}, True, False),
        ({L: "maybe"}, {}, True, True),
        ({}, {}, False, False),
        (None, None, True, True),
    ],
)
def test_label_precedence(service, namespace, default, expected) -> None:
    assert policies.is_fenced(service, namespace, default=default) is expected


def test_namespace_scope_deny_wins() -> None:
    scope = policies.Scope(allow_namespaces=("a", "b"), deny_namespaces=("b",))
    assert policies.namespace_in_scope("a", scope)
    assert not policies.namespace_in_scope("b", scope)
    assert not policies.namespace_in_scope("c", scope)
    assert policies.namespace_in_scope("c", policies.Scope())


def test_creation_outcomes() -> None:
    create = policies.creation("ns", service=SVC, namespace_labels={}, scope=SCOPE)
    assert create.outcome is policies.Outcome.CREATE
    off = policies.creation(
        "ns", service=SVC, namespace_labels={}, scope=policies.Scope(auto_create=False)
    )
    assert off.outcome is policies.Outcome.IGNORE
    missing = policies.creation("ns", service=None, namespace_labels={}, scope=SCOPE)
    assert missing.outcome is policies.Outcome.WAIT
    bare = policies.ServiceFacts(labels={}, selector={})
    assert (
        policies.creation("ns", service=bare, namespace_labels={}, scope=SCOPE).outcome
        is policies.Outcome.IGNORE
    )
    tomb = policies.creation("ns", service=SVC, namespace_labels={}, scope=SCOPE, tombstoned=True)
    assert tomb.outcome is policies.Outcome.IGNORE
    opted_out = policies.creation("ns", service=SVC, namespace_labels={L: "false"}, scope=SCOPE)
    assert opted_out.outcome is policies.Outcome.IGNORE
    # a global-sidecar global-pilot applied (one per namespace in namespace mode) keeps the mesh
    own = policies.ServiceFacts(
        labels={"app": "global-sidecar", "app.kubernetes.io/managed-by": "lazyload-global-pilot"},
        selector={"app": "global-sidecar"},
    )
    verdict = policies.creation("ns", service=own, namespace_labels={}, scope=SCOPE)
    assert verdict == policies.Verdict(policies.Outcome.IGNORE, "the global-sidecar's own Service")
    assert not policies.eager("ns", service=own, namespace_labels={}, scope=SCOPE)


TEAM = policies.LabelSelector(match_labels={"team": "mesh"})
GOLD = policies.LabelSelector(
    match_expressions=(
        policies.Requirement("tier", "In", ("gold", "silver")),
        policies.Requirement("legacy", "DoesNotExist"),
    )
)


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"team": "mesh"}, True),
        ({"team": "other"}, False),
        ({"tier": "gold"}, True),  # the selectors are ORed
        ({"tier": "gold", "legacy": "yes"}, False),
        ({"tier": "bronze"}, False),
        ({}, False),
        (None, False),  # labels not known yet: out of scope
    ],
)
def test_management_selectors(labels: dict[str, str] | None, expected: bool) -> None:
    scope = policies.Scope(management_selectors=(TEAM, GOLD))
    assert policies.namespace_in_scope("apps", scope, labels) is expected


def test_management_selectors_come_after_allow_and_deny() -> None:
    scope = policies.Scope(deny_namespaces=("apps",), management_selectors=(TEAM,))
    assert not policies.namespace_in_scope("apps", scope, {"team": "mesh"})
    scope = policies.Scope(allow_namespaces=("web",), management_selectors=(TEAM,))
    assert not policies.namespace_in_scope("apps", scope, {"team": "mesh"})
    assert policies.namespace_in_scope("web", scope, {"team": "mesh"})


@pytest.mark.parametrize(
    ("requirement", "labels", "expected"),
    [
        (policies.Requirement("a", "In", ("1",)), {"a": "1"}, True),
        (policies.Requirement("a", "In", ("1",)), {}, False),
        (policies.Requirement("a", "NotIn", ("1",)), {}, True),
        (policies.Requirement("a", "NotIn", ("1",)), {"a": "1"}, False),
        (policies.Requirement("a", "Exists"), {"a": ""}, True),
        (policies.Requirement("a", "DoesNotExist"), {"a": ""}, False),
    ],
)
def test_label_selector_operators(
    requirement: policies.Requirement, labels: dict[str, str], expected: bool
) -> None:
    assert policies.LabelSelector(match_expressions=(requirement,)).matches(labels) is expected
    assert policies.LabelSelector().matches(labels)  # an empty selector selects everything
