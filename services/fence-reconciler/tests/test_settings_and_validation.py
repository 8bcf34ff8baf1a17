"""Settings from the environment and validation of incoming edges (pure).

Covers: `LAZYLOAD_FENCE__*` variables fill the fence group (lists as JSON); `check()` names every
bad combination; the consumer spec matches the contract (stream, durable, filter); edges with an
unresolved caller, a bad caller name or an invalid host are refused with a reason.
"""

from __future__ import annotations

import pytest
from lazyload_common import errors, events
from lazyload_common.settings import MeshSettings
from lazyload_fence_reconciler import consuming, policies
from lazyload_fence_reconciler.settings import FenceSettings, ReconcilerSettings


def test_env_fills_the_fence_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAZYLOAD_FENCE__AUTO_CREATE", "false")
    monkeypatch.setenv("LAZYLOAD_FENCE__DENY_NAMESPACES", '["kube-system"]')
    monkeypatch.setenv("LAZYLOAD_FENCE__RESYNC_INTERVAL", "30")
    monkeypatch.setenv("LAZYLOAD_NATS__URL", "nats://nats:4222")
    config = ReconcilerSettings()
    assert config.fence.auto_create is False
    assert config.fence.deny_namespaces == ["kube-system"]
    assert config.fence.resync_interval == 30
    assert config.nats.url == "nats://nats:4222"
    config.check()


def test_check_names_every_problem() -> None:
    config = ReconcilerSettings(
        fence=FenceSettings(
            allow_namespaces=["a"], deny_namespaces=["a"], resync_interval=0, recycle_after=10
        )
    )
    with pytest.raises(errors.ConfigError) as caught:
        config.check()
    assert "'a'" in str(caught.value) and "recycle_after" in str(caught.value)


def test_consumer_spec_matches_the_contract() -> None:
    spec = consuming.consumer_spec(ReconcilerSettings().fence)
    assert (spec.stream, spec.durable, spec.filter_subject, spec.service) == (
        "LAZYLOAD_DEPS",
        "fence-reconciler",
        "lazyload.deps.>",
        "fence-reconciler",
    )
    assert spec.model is events.DependencyObserved
    assert spec.max_deliver == 600  # then dead-lettered with its reason, never retried for ever


def test_missing_service_retries_fit_in_max_deliver() -> None:
    config = ReconcilerSettings(fence=FenceSettings(missing_service_retries=10, max_deliver=5))
    with pytest.raises(errors.ConfigError, match="missing_service_retries"):
        config.check()


def _edge(**fields: object) -> events.DependencyObserved:
    base: dict[str, object] = {
        "source_namespace": "default",
        "source_name": "productpage",
        "destination_host": "details.default.svc.cluster.local",
        "first_seen": 1.0,
    }
    return events.DependencyObserved.model_validate({**base, **fields})


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({}, None),
        ({"destination_host": "www.example.com"}, None),
        ({"source_kind": "unresolved"}, "unresolved caller"),
        ({"source_namespace": "Bad_NS"}, "invalid caller namespace"),
        ({"source_name": "bad name"}, "invalid caller name"),
        ({"destination_host": "Not_A_Host"}, "invalid host"),
        ({"destination_host": "details:9080"}, "invalid host"),
        ({"destination_host": "*.example.com"}, "invalid host"),
        ({"destination_host": "istio-system/*"}, "invalid host"),
        ({"destination_host": "*"}, "invalid host"),
        ({"destination_host": "*/details.default.svc.cluster.local"}, "invalid host"),
        ({"destination_port": 0}, "invalid port"),
        ({"destination_port": 70000}, "invalid port"),
        ({"destination_port": 9080, "destination_namespace": "default"}, None),
        ({"destination_namespace": "a/b"}, "invalid destination namespace"),
        ({"destination_service": "../x"}, "invalid destination service"),
    ],
)
def test_invalid_edges(fields: dict[str, object], reason: str | None) -> None:
    found = consuming.invalid_reason(_edge(**fields))
    assert (found is None) if reason is None else (found or "").startswith(reason)


def test_management_selectors_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "LAZYLOAD_FENCE__MANAGEMENT_SELECTORS",
        '[{"matchLabels": {"team": "mesh"}}, '
        '{"matchExpressions": [{"key": "tier", "operator": "In", "values": ["gold"]}]}]',
    )
    scope = ReconcilerSettings().fence.scope()
    assert [s.match_labels for s in scope.management_selectors] == [{"team": "mesh"}, {}]
    assert policies.namespace_in_scope("x", scope, {"tier": "gold"})
    assert not policies.namespace_in_scope("x", scope, {"tier": "bronze"})


@pytest.mark.parametrize(
    "selectors",
    [
        '[{"matchExpressions": [{"key": "tier", "operator": "In"}]}]',
        '[{"matchExpressions": [{"key": "tier", "operator": "Exists", "values": ["x"]}]}]',
        '[{"matchExpressions": [{"key": "tier", "operator": "Near", "values": ["x"]}]}]',
        '[{"matchLabel": {"team": "mesh"}}]',
    ],
)
def test_bad_management_selectors_are_refused(
    monkeypatch: pytest.MonkeyPatch, selectors: str
) -> None:
    monkeypatch.setenv("LAZYLOAD_FENCE__MANAGEMENT_SELECTORS", selectors)
    with pytest.raises(ValueError):
        ReconcilerSettings()


def test_recycling_needs_a_liveness_source() -> None:
    """Once a dependency is in the Sidecar the global-sidecar never sees it again: recycling
    with no other liveness source would drop live dependencies, so it refuses to start."""
    config = ReconcilerSettings(fence=FenceSettings(recycle_after=3600))
    with pytest.raises(errors.ConfigError) as caught:
        config.check()
    assert "liveness" in str(caught.value)
    fence = FenceSettings(recycle_after=3600, liveness_source="sidecar-als")
    ReconcilerSettings(fence=fence).check()


def test_scoped_fence_never_fences_system_istio_and_lazyload_namespaces() -> None:
    config = ReconcilerSettings(
        fence=FenceSettings(deny_namespaces=["legacy"]),
        mesh=MeshSettings(istio_namespace="istio", global_sidecar_namespace="lazy"),
    )
    assert config.scoped_fence().deny_namespaces == [
        "legacy",
        "kube-system",
        "kube-public",
        "kube-node-lease",
        "istio",
        "lazy",
    ]
    assert config.fence.deny_namespaces == ["legacy"]  # the setting itself is untouched
