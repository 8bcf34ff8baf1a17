"""A rendered Sidecar is checked before it may be applied: an invalid one is refused.

Covers: every render of the rendering table passes for all three api versions; Istio's schema
refuses wrong types, unknown fields and a wrong apiVersion; the host rules refuse hosts without a
namespace, uppercase or wildcard hosts, ports and `*/*`; bad names, namespaces and selectors.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from lazyload_sidecar_writer import errors, rendering, validating

from .conftest import make_fence, make_settings

RawObject = dict[str, Any]


def _valid() -> RawObject:
    return rendering.render(make_fence(), make_settings())


@pytest.mark.parametrize("version", ["v1", "v1beta1", "v1alpha3"])
def test_renders_pass(version: str) -> None:
    event = make_fence(hosts=["a.b.svc.cluster.local", "www.163.com", "test/*"])
    validating.validate(rendering.render(event, make_settings(api_version=version)))


def _set(path: str, value: Any) -> Callable[[RawObject], None]:
    def mutate(obj: RawObject) -> None:
        *parents, last = path.split(".")
        node: Any = obj  # down through objects and lists
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[last] = value

    return mutate


BROKEN: list[tuple[str, Callable[[RawObject], None], str]] = [
    ("hosts not a list", _set("spec.egress.0.hosts", "*/a.b"), "valid list"),
    ("unknown spec field", _set("spec.egress.0.bogus", 1), "spec.egress[0].bogus: unknown field"),
    ("unknown top field", _set("spex", {}), "spex: unknown field"),
    ("wrong captureMode", _set("spec.egress.0.captureMode", "MAGIC"), "captureMode"),
    ("unsupported group", _set("apiVersion", "networking.example.io/v1"), "unsupported apiVersion"),
    ("host without namespace", _set("spec.egress.0.hosts", ["a.b.svc"]), "missing `<namespace>/`"),
    ("uppercase host", _set("spec.egress.0.hosts", ["*/Reviews.default"]), "RFC 1123"),
    ("wildcard host", _set("spec.egress.0.hosts", ["*/*.example.com"]), "RFC 1123"),
    ("host with port", _set("spec.egress.0.hosts", ["*/a.b:80"]), "RFC 1123"),
    ("the whole mesh", _set("spec.egress.0.hosts", ["*/*"]), "whole mesh"),
    ("bad namespace in host", _set("spec.egress.0.hosts", ["Bad_NS/*"]), "invalid namespace"),
    ("own namespace form", _set("spec.egress.0.hosts", ["./*"]), "invalid namespace"),
    ("bad name", _set("metadata.name", "Product_Page"), "DNS subdomain"),
    ("bad namespace", _set("metadata.namespace", "a.b"), "not a namespace"),
    ("empty selector", _set("spec.workloadSelector.labels", {}), "every workload"),
    ("bad selector value", _set("spec.workloadSelector.labels", {"app": "a b"}), "invalid"),
    # a regex `$` would match before a trailing newline: none may slip through
    ("host ending in a newline", _set("spec.egress.0.hosts", ["*/a.b\n"]), "RFC 1123"),
    ("namespace ending in a newline", _set("spec.egress.0.hosts", ["ns\n/*"]), "namespace"),
    ("name ending in a newline", _set("metadata.name", "productpage\n"), "DNS subdomain"),
    ("label ending in a newline", _set("spec.workloadSelector.labels", {"app": "a\n"}), "invalid"),
]


@pytest.mark.parametrize(("mutate", "reason"), [c[1:] for c in BROKEN], ids=[c[0] for c in BROKEN])
def test_invalid_render_is_refused(mutate: Callable[[RawObject], None], reason: str) -> None:
    sidecar = copy.deepcopy(_valid())
    mutate(sidecar)
    with pytest.raises(errors.InvalidSidecar, match=reason.replace("*", r"\*").replace("[", r"\[")):
        validating.validate(sidecar)


def test_api_version_must_match_the_model() -> None:
    sidecar = _valid()
    sidecar["apiVersion"] = "networking.istio.io/v2"
    with pytest.raises(errors.InvalidSidecar, match="unsupported apiVersion"):
        validating.validate(sidecar)


def test_an_invalid_fence_host_makes_the_render_invalid() -> None:
    """A host the reconciler should never have sent is caught here, not by the API server."""
    sidecar = rendering.render(make_fence(hosts=["Bad Host"]), make_settings())
    with pytest.raises(errors.InvalidSidecar, match="egress host"):
        validating.validate(sidecar)


def test_invalid_sidecar_is_permanent() -> None:
    from lazyload_common import errors as common_errors

    assert issubclass(errors.InvalidSidecar, common_errors.PermanentError)
