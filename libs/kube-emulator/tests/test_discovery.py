"""Discovery through the official client.

Covers: `/api` and `/api/v1` (core kinds with verbs, shortNames, namespaced, subresources),
`/apis` groups with preferred versions, `/apis/{group}/{version}` of built-in groups, the
dev Istio CRDs preloaded by the fixture (all three versions), a new CRD appearing in and a
deleted one disappearing from discovery, the dynamic client resolving kinds, and `/version`.
"""

from __future__ import annotations

import pytest
from kubernetes import client, dynamic
from kubernetes.dynamic.exceptions import ResourceNotFoundError

GROUP = "example.com"


def _resources(resource_list: client.V1APIResourceList) -> dict[str, client.V1APIResource]:
    return {r.name: r for r in resource_list.resources}


def test_core_group_lists_the_builtin_kinds(api):
    assert client.CoreApi(api).get_api_versions().versions == ["v1"]
    resources = _resources(client.CoreV1Api(api).get_api_resources())
    assert {"namespaces", "services", "endpoints", "pods", "configmaps", "events"} <= set(resources)
    services = resources["services"]
    assert services.kind == "Service"
    assert services.namespaced is True
    assert services.short_names == ["svc"]
    assert services.singular_name == "service"
    assert {"get", "list", "watch", "create", "update", "patch", "delete"} <= set(services.verbs)
    assert resources["namespaces"].namespaced is False
    assert "services/status" in resources


def test_group_list_has_builtin_and_crd_groups(api):
    groups = {g.name: g for g in client.ApisApi(api).get_api_versions().groups}
    assert {"discovery.k8s.io", "coordination.k8s.io", "apiextensions.k8s.io"} <= set(groups)
    istio = groups["networking.istio.io"]
    assert [v.version for v in istio.versions] == ["v1", "v1beta1", "v1alpha3"]
    assert istio.preferred_version is not None and istio.preferred_version.version == "v1"


def test_builtin_group_versions(api):
    slices = _resources(client.DiscoveryV1Api(api).get_api_resources())["endpointslices"]
    assert slices.kind == "EndpointSlice" and slices.namespaced
    leases = _resources(client.CoordinationV1Api(api).get_api_resources())["leases"]
    assert leases.kind == "Lease"
    crds = _resources(client.ApiextensionsV1Api(api).get_api_resources())
    assert crds["customresourcedefinitions"].short_names == ["crd", "crds"]
    assert "customresourcedefinitions/status" in crds


@pytest.mark.parametrize("version", ["v1", "v1beta1", "v1alpha3"])
def test_istio_dev_crds_are_served_at_every_version(api, version):
    dyn = dynamic.DynamicClient(api)
    for kind in ("Sidecar", "EnvoyFilter", "VirtualService", "ServiceEntry", "DestinationRule"):
        resource = dyn.resources.get(api_version=f"networking.istio.io/{version}", kind=kind)
        assert resource.namespaced
        assert resource.subresources["status"].kind == kind


def test_crd_appears_and_disappears(api, extensions, make_widget_crd):
    group_names = lambda: {g.name for g in client.ApisApi(api).get_api_versions().groups}  # noqa: E731
    assert GROUP not in group_names()
    extensions.create_custom_resource_definition(make_widget_crd())
    assert GROUP in group_names()
    widgets = dynamic.DynamicClient(api).resources.get(
        api_version=f"{GROUP}/v1beta1", kind="Widget"
    )
    assert widgets.name == "widgets" and widgets.short_names == ["wd"]
    extensions.delete_custom_resource_definition(f"widgets.{GROUP}")
    assert GROUP not in group_names()
    with pytest.raises(ResourceNotFoundError):
        dynamic.DynamicClient(api).resources.get(api_version=f"{GROUP}/v1", kind="Widget")


def test_version(api):
    info = client.VersionApi(api).get_code()
    assert info.major == "1"
    assert info.git_version.startswith("v1.")
