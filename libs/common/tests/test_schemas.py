"""Istio's schema as `lazyload_common.schemas` checks it (the Sidecars of sidecar-writer, the
EnvoyFilters and DestinationRules of global-pilot): a conforming object has no problems; an
unknown apiVersion or kind, a value of the wrong type, an unknown field and a value the schema
reads differently (a port as a string) are each named with where they are."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from lazyload_common import schemas

SIDECAR: dict[str, Any] = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "Sidecar",
    "metadata": {"name": "productpage", "namespace": "default"},
    "spec": {
        "workloadSelector": {"labels": {"app": "productpage"}},
        "egress": [{"hosts": ["istio-system/*"], "port": {"number": 9080, "protocol": "HTTP"}}],
    },
}


def test_a_conforming_object_has_no_problems() -> None:
    assert schemas.problems(SIDECAR) == []
    assert schemas.model("networking.istio.io/v1", "Sidecar") is not None
    assert schemas.model("networking.istio.io/v2", "Sidecar") is None


def _with(path: str, value: Any) -> dict[str, Any]:
    obj = copy.deepcopy(SIDECAR)
    *parents, last = path.split(".")
    here: Any = obj
    for part in parents:
        here = here[int(part)] if part.isdigit() else here[part]
    here[last] = value
    return obj


@pytest.mark.parametrize(
    ("obj", "problem"),
    [
        (_with("apiVersion", "networking.istio.io/v2"), "unsupported apiVersion"),
        (_with("apiVersion", "security.istio.io/v1"), "unsupported apiVersion"),
        (_with("kind", "Sidecarr"), "no Istio schema for kind 'Sidecarr'"),
        (_with("spec.egress", "*/a"), "spec.egress: "),
        (_with("spec.egress.0.bogus", 1), "spec.egress[0].bogus: unknown field"),
        (_with("spec.egress.0.port.number", "9080"), "spec.egress[0].port.number: read as 9080"),
    ],
    ids=["version", "group", "kind", "type", "unknown-field", "coerced-value"],
)
def test_each_problem_says_where(obj: dict[str, Any], problem: str) -> None:
    found = schemas.problems(obj)
    assert any(problem in p for p in found), found
