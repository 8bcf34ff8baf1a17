"""Rendering a fence into a Slime-compatible Sidecar (pure, no I/O).

Covers: base hosts from the mesh settings, extra hosts, FQDN and namespace domains, the two host
modes, sorting and de-duplication, api versions, labels (managed-by, istio.io/rev), the revision
annotation, the ownerReference only with a known uid, and fences that cannot be rendered.
"""

from __future__ import annotations

from typing import Any

import pytest
from lazyload_common.settings import MeshSettings
from lazyload_sidecar_writer import errors, rendering
from lazyload_sidecar_writer.settings import WriterSettings

from .conftest import make_fence, make_settings

BASE = ["istio-system/*", "mesh-operator/*"]

HOST_CASES: list[tuple[str, dict[str, Any], list[str], list[str]]] = [
    ("no fence hosts: only the mesh namespaces", {}, [], BASE),
    (
        "FQDNs become */fqdn, sorted with the base",
        {},
        ["reviews.default.svc.cluster.local", "details.default.svc.cluster.local"],
        ["*/details.default.svc.cluster.local", "*/reviews.default.svc.cluster.local", *BASE],
    ),
    ("a namespace domain stays as is", {}, ["test/*"], [*BASE, "test/*"]),
    ("external hosts keep */host", {}, ["www.163.com"], ["*/www.163.com", *BASE]),
    (
        "duplicates collapse, base hosts included",
        {},
        ["istio-system/*", "a.b.svc.cluster.local", "a.b.svc.cluster.local"],
        ["*/a.b.svc.cluster.local", *BASE],
    ),
    (
        "own-namespace mode: a Service FQDN gets its namespace",
        {"host_mode": "own-namespace"},
        ["details.bookinfo.svc.cluster.local", "www.163.com", "ns2/*"],
        ["*/www.163.com", "bookinfo/details.bookinfo.svc.cluster.local", *BASE, "ns2/*"],
    ),
    (
        "own-namespace mode: not a Service FQDN (extra label) keeps */",
        {"host_mode": "own-namespace"},
        ["a.b.c.svc.cluster.local"],
        ["*/a.b.c.svc.cluster.local", *BASE],
    ),
    (
        "short domain: a Service of the fence's namespace is also listed by its short name",
        {"short_domain": True},
        ["details.default.svc.cluster.local", "ratings.other.svc.cluster.local", "www.163.com"],
        [
            "*/details",
            "*/details.default.svc.cluster.local",
            "*/ratings.other.svc.cluster.local",
            "*/www.163.com",
            *BASE,
        ],
    ),
    (
        "short domain in own-namespace mode: <ns>/<short name>",
        {"short_domain": True, "host_mode": "own-namespace"},
        ["details.default.svc.cluster.local"],
        ["default/details", "default/details.default.svc.cluster.local", *BASE],
    ),
    (
        "extra hosts: bare FQDN gets */, ns/* and ns/host as they are",
        {
            "extra_hosts": [
                "stable.example.com",
                "monitoring/*",
                "ops/grafana.ops.svc.cluster.local",
            ]
        },
        [],
        [
            "*/stable.example.com",
            *BASE,
            "monitoring/*",
            "ops/grafana.ops.svc.cluster.local",
        ],
    ),
]


@pytest.mark.parametrize(
    ("sidecar", "hosts", "expected"),
    [case[1:] for case in HOST_CASES],
    ids=[case[0] for case in HOST_CASES],
)
def test_egress_hosts(sidecar: dict[str, Any], hosts: list[str], expected: list[str]) -> None:
    event = make_fence(hosts=hosts)
    rendered = rendering.render(event, make_settings(**sidecar))
    assert rendered["spec"]["egress"] == [{"hosts": expected}]


def test_mesh_namespaces_come_from_settings() -> None:
    settings = WriterSettings(
        mesh=MeshSettings(istio_namespace="istio", global_sidecar_namespace="gs")
    )
    assert rendering.egress_hosts(make_fence(hosts=[]), settings) == ["gs/*", "istio/*"]
    same = WriterSettings(mesh=MeshSettings(istio_namespace="x", global_sidecar_namespace="x"))
    assert rendering.egress_hosts(make_fence(hosts=[]), same) == ["x/*"]


def test_namespace_mode_sidecars_reach_their_namespace_global_sidecar() -> None:
    mesh = MeshSettings(global_sidecar_service="lazyload-global-sidecar")
    fence = make_fence(hosts=[])
    assert fence.namespace == "default"
    assert rendering.egress_hosts(fence, WriterSettings(mesh=mesh)) == [
        "*/lazyload-global-sidecar.default.svc.cluster.local",
        "istio-system/*",
        "mesh-operator/*",
    ]


def test_full_shape_is_slime_compatible(settings: WriterSettings) -> None:
    rendered = rendering.render(make_fence(revision=7), settings)
    assert rendered == {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Sidecar",
        "metadata": {
            "name": "productpage",
            "namespace": "default",
            "labels": {"app.kubernetes.io/managed-by": "lazyload"},
            "annotations": {"lazyload.io/fence-revision": "7"},
            "ownerReferences": [
                {
                    "apiVersion": "microservice.slime.io/v1alpha1",
                    "kind": "ServiceFence",
                    "name": "productpage",
                    "uid": "uid-productpage",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "workloadSelector": {"labels": {"app": "productpage"}},
            "egress": [
                {
                    "hosts": [
                        "*/details.default.svc.cluster.local",
                        "*/reviews.default.svc.cluster.local",
                        "istio-system/*",
                        "mesh-operator/*",
                    ]
                }
            ],
        },
    }


@pytest.mark.parametrize("version", ["v1", "v1beta1", "v1alpha3"])
def test_api_version_is_configurable(version: str) -> None:
    rendered = rendering.render(make_fence(), make_settings(api_version=version))
    assert rendered["apiVersion"] == f"networking.istio.io/{version}"


def test_revision_label_only_when_configured() -> None:
    plain = rendering.render(make_fence(), make_settings())
    assert "istio.io/rev" not in plain["metadata"]["labels"]
    revved = rendering.render(make_fence(), make_settings(revision="canary"))
    assert revved["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "lazyload",
        "istio.io/rev": "canary",
    }


def test_no_owner_reference_without_uid(settings: WriterSettings) -> None:
    rendered = rendering.render(make_fence(uid=""), settings)
    assert "ownerReferences" not in rendered["metadata"]


@pytest.mark.parametrize("selector", [None, {}], ids=["none", "empty"])
def test_fence_without_selector_cannot_render(
    settings: WriterSettings, selector: dict[str, str] | None
) -> None:
    with pytest.raises(errors.Unrenderable, match="no workload selector"):
        rendering.render(make_fence(workload_selector=selector), settings)


def test_rendering_is_deterministic(settings: WriterSettings) -> None:
    a = make_fence(
        hosts=["b.x.svc.cluster.local", "a.x.svc.cluster.local"],
        workload_selector={"z": "1", "a": "2"},
    )
    b = make_fence(
        hosts=["a.x.svc.cluster.local", "b.x.svc.cluster.local"],
        workload_selector={"a": "2", "z": "1"},
    )
    assert rendering.render(a, settings) == rendering.render(b, settings)
    assert list(rendering.render(a, settings)["spec"]["workloadSelector"]["labels"]) == ["a", "z"]


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        ({"lazyload.io/fence-revision": "12"}, 12),
        ({}, None),
        ({"lazyload.io/fence-revision": "x"}, None),
    ],
)
def test_stored_revision_is_read_back(annotations: dict[str, str], expected: int | None) -> None:
    assert rendering.fence_revision({"metadata": {"annotations": annotations}}) == expected
