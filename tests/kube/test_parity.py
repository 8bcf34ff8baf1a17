"""The same checks against the Kubernetes API emulator and a real kube-apiserver: where the
emulator behaved differently, it now answers as the real server does."""

from __future__ import annotations

import contextlib
import ipaddress
from typing import Any

import pytest
from lazyload_common import kube

SERVER = [
    "kube_emulator",
    pytest.param("real_kube", marks=pytest.mark.real),
]


@pytest.fixture(params=SERVER)
def server(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(request.param)


def _endpoints(ip: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": "details"},
        "subsets": [{"addresses": [{"ip": ip}], "ports": [{"port": 9080}]}],
    }


def _slice(ip: str) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "details-1", "labels": {"kubernetes.io/service-name": "details"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip]}],
        "ports": [{"port": 9080}],
    }


ENDPOINTS = "/api/v1/namespaces/default/endpoints"
SLICES = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"


@pytest.mark.parametrize(
    ("ip", "reason"),
    [
        ("127.0.10.1", "loopback"),
        ("169.254.1.1", "link-local"),
        ("0.0.0.0", "unspecified"),
    ],
)
def test_special_endpoint_addresses_are_refused(server: Any, ip: str, reason: str) -> None:
    api = kube.KubeApi(server.api_client())
    for path, body in ((ENDPOINTS, _endpoints(ip)), (SLICES, _slice(ip))):
        with pytest.raises(kube.KubeUnprocessable) as refused:
            api.create(path, body)
        assert refused.value.status == 422
        assert reason in refused.value.message and ip in refused.value.message
    for path, body in ((ENDPOINTS, _endpoints("10.244.0.7")), (SLICES, _slice("10.244.0.7"))):
        api.create(path, body)


def test_services_get_cluster_ips_of_the_kubeadm_range(server: Any) -> None:
    api = kube.KubeApi(server.api_client())
    created = api.create(
        "/api/v1/namespaces/default/services",
        {"metadata": {"name": "details"}, "spec": {"ports": [{"port": 9080}]}},
    )
    ip = ipaddress.ip_address(created["spec"]["clusterIP"])
    assert ip in ipaddress.ip_network("10.96.0.0/12")


def test_an_object_of_a_missing_namespace_is_not_found(server: Any) -> None:
    api = kube.KubeApi(server.api_client())
    with pytest.raises(kube.KubeNotFound) as missing:
        api.create("/api/v1/namespaces/nowhere/configmaps", {"metadata": {"name": "x"}, "data": {}})
    assert 'namespaces "nowhere" not found' in missing.value.message


def test_a_pod_status_given_on_create_is_dropped(server: Any) -> None:
    api = kube.KubeApi(server.api_client())
    with contextlib.suppress(kube.KubeConflict):  # the real server's controller made it
        api.create("/api/v1/namespaces/default/serviceaccounts", {"metadata": {"name": "default"}})
    created = api.create(
        "/api/v1/namespaces/default/pods",
        {
            "metadata": {"name": "details-v1"},
            "spec": {"containers": [{"name": "app", "image": "demo"}]},
            "status": {"phase": "Running", "podIP": "10.244.0.7"},
        },
    )
    assert created["status"].get("phase") == "Pending" and "podIP" not in created["status"]
