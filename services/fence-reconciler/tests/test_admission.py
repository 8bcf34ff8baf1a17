"""Which learned edges may enter a fence (pure domain: `admitting`).

Covers: a host dispatched anywhere but the global-sidecar is refused (domains: exact, suffix and
prefix wildcards, `*`, with Envoy's most-specific-wins; regex: full match, only when no domain
dispatch matched); a `_GLOBAL_SIDECAR` dispatch does not refuse; an external host is kept when
ingest matched a ServiceEntry, when it is a watched ServiceEntry host (wildcards too), or when it
matches an allow glob, else refused; mesh hosts are never refused for being external; the
settings parse global-pilot's dispatch JSON.
"""

from __future__ import annotations

import pytest
from lazyload_fence_reconciler import admitting
from lazyload_fence_reconciler.settings import FenceSettings


def _gate(*dispatches: dict[str, object], allow: tuple[str, ...] = ()) -> admitting.Gate:
    values = {"dispatches": list(dispatches), "external_allow": list(allow)}
    return FenceSettings.model_validate(values).gate()  # the dispatches as JSON


def test_dispatched_hosts_are_refused() -> None:
    gate = _gate(
        {"name": "ext", "domains": ["*.example.com"], "cluster": "_PASSTHROUGH"},
        {"name": "gs", "domains": ["api.example.com"], "cluster": "_GLOBAL_SIDECAR"},
        {"name": "short", "domainRegex": "^(?:[^.])+$", "cluster": "PassthroughCluster"},
        {
            "name": "pre",
            "domains": ["egress.*"],
            "cluster": "outbound|80||egress.gw.svc.cluster.local",
        },
    )
    verdict = gate.verdict
    assert verdict("www.example.com", external=True, registered=True) == "dispatched"
    assert verdict("api.example.com", external=True, registered=True) is None
    assert verdict("localhost", external=False, registered=False) == "dispatched"
    assert verdict("egress.corp", external=True, registered=True) == "dispatched"
    assert verdict("details.default.svc.cluster.local", external=False, registered=False) is None


def test_catch_all_dispatch_refuses_everything_but_global_sidecar() -> None:
    gate = _gate({"name": "all", "domains": ["*"], "cluster": "_PASSTHROUGH"})
    assert gate.verdict("a.b.svc.cluster.local", external=False, registered=False) == "dispatched"


def test_external_hosts_need_a_service_entry_or_the_allow_list() -> None:
    gate = _gate(allow=("*.allowed.io",))
    verdict = gate.verdict
    assert verdict("www.unknown.com", external=True, registered=False) == "external-dropped"
    assert verdict("www.unknown.com", external=True, registered=True) is None
    assert verdict("x.allowed.io", external=True, registered=False) is None
    entries = frozenset({"*.wiki.org", "api.stripe.com"})
    assert (
        verdict("en.wiki.org", external=True, registered=False, service_entry_hosts=entries) is None
    )
    assert (
        verdict("api.stripe.com", external=True, registered=False, service_entry_hosts=entries)
        is None
    )
    assert (
        verdict("stripe.com", external=True, registered=False, service_entry_hosts=entries)
        == "external-dropped"
    )


def test_dispatch_needs_exactly_one_matcher() -> None:
    with pytest.raises(ValueError):
        FenceSettings.model_validate({"dispatches": [{"name": "x", "cluster": "c"}]})
    with pytest.raises(ValueError):
        FenceSettings.model_validate(
            {"dispatches": [{"name": "x", "domainRegex": "(", "cluster": "c"}]}
        )


def test_a_service_fqdn_naming_no_service_is_refused() -> None:
    gate = _gate()
    ghost = "ghost.default.svc.cluster.local"
    assert gate.verdict(ghost, external=False, registered=False, service_exists=False) == (
        "unknown-service"
    )
    assert gate.verdict(ghost, external=False, registered=False, service_exists=True) is None
    assert (
        gate.verdict(
            ghost,
            external=False,
            registered=False,
            service_exists=False,
            service_entry_hosts=["*.default.svc.cluster.local"],
        )
        is None
    )
    lenient = FenceSettings(learn_unknown_services=True).gate()
    assert lenient.verdict(ghost, external=False, registered=False, service_exists=False) is None
