"""Dispatch rules shared by global-pilot and fence-reconciler: validation, and Envoy's choice of
the rule for a host (exact > longest suffix > longest prefix > `*`, else the first regex)."""

from __future__ import annotations

import pytest
from lazyload_common.dispatches import Dispatch, dispatch_of
from pydantic import ValidationError

RULES = [
    Dispatch(name="any", domains=("*",), cluster="_GLOBAL_SIDECAR"),
    Dispatch(name="ext", domains=("*.example.com",), cluster="_PASSTHROUGH"),
    Dispatch(
        name="api", domains=("api.example.com",), cluster="outbound|80||gw.ns.svc.cluster.local"
    ),
    Dispatch(name="pre", domains=("internal.*",), cluster="PassthroughCluster"),
    Dispatch(name="rx", domainRegex=r"db-\d+\.corp", cluster="_PASSTHROUGH"),
]


@pytest.mark.parametrize(
    "host,expected",
    [
        ("api.example.com", "api"),
        ("www.example.com", "ext"),
        ("internal.corp", "pre"),
        ("details.default.svc.cluster.local", "any"),
        ("example.com", "any"),
    ],
)
def test_envoy_order(host: str, expected: str) -> None:
    chosen = dispatch_of(host, RULES)
    assert chosen is not None and chosen.name == expected


def test_regex_when_no_domain_matches() -> None:
    rules = [r for r in RULES if r.name != "any"]
    chosen = dispatch_of("db-12.corp", rules)
    assert chosen is not None and chosen.name == "rx"
    assert dispatch_of("db-x.corp", rules) is None


def test_targets() -> None:
    assert RULES[0].to_global_sidecar and RULES[1].to_passthrough and RULES[3].to_passthrough
    assert not RULES[2].to_passthrough and not RULES[2].to_global_sidecar


@pytest.mark.parametrize(
    "raw",
    [
        {"name": "x", "cluster": "c"},
        {"name": "x", "cluster": "c", "domains": ["a"], "domainRegex": "a"},
        {"name": "x", "cluster": "c", "domainRegex": "("},
        {"name": "bad name", "cluster": "c", "domains": ["a"]},
        {"name": "x", "cluster": "c", "domains": ["a"], "unknown": 1},
    ],
)
def test_invalid_rules_are_refused(raw: dict) -> None:
    with pytest.raises(ValidationError):
        Dispatch.model_validate(raw)
