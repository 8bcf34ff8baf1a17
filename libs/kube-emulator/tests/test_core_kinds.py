"""CRUD of the built-in kinds through the official client.

Covers: the start namespaces; create/get/list/replace/delete of services, endpoints, pods,
configmaps, events, endpointslices and leases; lists across all namespaces; Service cluster IP
allocation (from the range, headless "None", explicit, taken, released on delete, kept on
replace); `generateName`; 409 AlreadyExists; 404 NotFound for objects and for a create in a
missing namespace; 422 for bad names; metadata (uid, resourceVersion, creationTimestamp,
generation); deletion responses and namespace deletion removing its objects; deletecollection
with a label selector; dryRun=All.
"""

from __future__ import annotations

import ipaddress
import json

import pytest
from kubernetes import client
from kubernetes.client import ApiException


def _svc(name: str, **spec) -> dict:
    return {"metadata": {"name": name}, "spec": {"ports": [{"port": 80}], **spec}}


def test_start_namespaces_exist(core):
    names = {ns.metadata.name for ns in core.list_namespace().items}
    assert {"default", "kube-system", "istio-system"} <= names
    assert core.read_namespace("default").status.phase == "Active"


def test_service_lifecycle_and_metadata(core):
    created = core.create_namespaced_service("default", _svc("web", selector={"app": "web"}))
    meta = created.metadata
    assert meta.uid and meta.resource_version.isdigit() and meta.generation == 1
    assert meta.creation_timestamp is not None
    assert ipaddress.ip_address(created.spec.cluster_ip) in ipaddress.ip_network("10.96.0.0/12")
    assert created.spec.ports[0].protocol == "TCP" and created.spec.ports[0].target_port == 80
    got = core.read_namespaced_service("web", "default")
    assert got.metadata.uid == meta.uid
    got.spec.selector = {"app": "web2"}
    got.spec.cluster_ip = None
    got.spec.cluster_ips = None
    replaced = core.replace_namespaced_service("web", "default", got)
    assert replaced.spec.cluster_ip == created.spec.cluster_ip
    assert replaced.metadata.generation == 2
    assert int(replaced.metadata.resource_version) > int(meta.resource_version)
    deleted = core.delete_namespaced_service("web", "default")
    assert deleted.metadata.name == "web"
    with pytest.raises(ApiException) as err:
        core.read_namespaced_service("web", "default")
    assert err.value.status == 404 and err.value.body is not None
    assert json.loads(err.value.body)["reason"] == "NotFound"


def test_cluster_ip_rules(core):
    headless = core.create_namespaced_service("default", _svc("headless", clusterIP="None"))
    assert headless.spec.cluster_ip == "None"
    fixed = core.create_namespaced_service("default", _svc("fixed", clusterIP="10.96.7.7"))
    assert fixed.spec.cluster_ip == "10.96.7.7"
    for ip, name in (("10.96.7.7", "taken"), ("192.168.1.1", "outside")):
        with pytest.raises(ApiException) as err:
            core.create_namespaced_service("default", _svc(name, clusterIP=ip))
        assert err.value.status == 422
    core.delete_namespaced_service("fixed", "default")
    again = core.create_namespaced_service("default", _svc("again", clusterIP="10.96.7.7"))
    assert again.spec.cluster_ip == "10.96.7.7"
    ips = {
        core.create_namespaced_service("default", _svc(f"s{i}")).spec.cluster_ip for i in range(5)
    }
    assert len(ips) == 5 and "10.96.7.7" not in ips


def test_duplicate_create_is_409_already_exists(core):
    core.create_namespaced_config_map("default", {"metadata": {"name": "cm"}, "data": {"a": "1"}})
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("default", {"metadata": {"name": "cm"}})
    assert err.value.status == 409 and err.value.body is not None
    status = json.loads(err.value.body)
    assert status["kind"] == "Status" and status["reason"] == "AlreadyExists"
    assert status["details"]["name"] == "cm"


def test_generate_name(core):
    first = core.create_namespaced_config_map("default", {"metadata": {"generateName": "cfg-"}})
    second = core.create_namespaced_config_map("default", {"metadata": {"generateName": "cfg-"}})
    assert first.metadata.name.startswith("cfg-") and len(first.metadata.name) == 9
    assert first.metadata.name != second.metadata.name


def test_create_in_missing_namespace_is_404(core):
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("nowhere", {"metadata": {"name": "cm"}})
    assert err.value.status == 404 and err.value.body is not None
    assert 'namespaces "nowhere" not found' in json.loads(err.value.body)["message"]


def test_invalid_name_is_422(core):
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("default", {"metadata": {"name": "Not_Valid"}})
    assert err.value.status == 422 and err.value.body is not None
    assert json.loads(err.value.body)["details"]["causes"][0]["field"] == "metadata.name"


def test_other_core_kinds(core):
    core.create_namespaced_endpoints(
        "default",
        {
            "metadata": {"name": "web"},
            "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 8080}]}],
        },
    )
    assert core.read_namespaced_endpoints("web", "default").subsets[0].addresses[0].ip == "10.0.0.1"
    pod = core.create_namespaced_pod(
        "default",
        {
            "metadata": {"name": "p", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]},
            "status": {"podIP": "10.0.0.1"},
        },
    )
    assert pod.status.phase == "Pending" and pod.status.pod_ip is None
    core.patch_namespaced_pod_status("p", "default", {"status": {"podIP": "10.0.0.9"}})
    assert core.read_namespaced_pod("p", "default").status.pod_ip == "10.0.0.9"
    core.create_namespaced_event(
        "default",
        {
            "metadata": {"name": "p.1"},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
            "reason": "Tested",
            "message": "hello",
        },
    )
    assert [e.reason for e in core.list_namespaced_event("default").items] == ["Tested"]
    assert core.delete_namespaced_endpoints("web", "default")["status"] == "Success"


def test_endpointslices_and_leases(api):
    discovery = client.DiscoveryV1Api(api)
    discovery.create_namespaced_endpoint_slice(
        "default",
        client.V1EndpointSlice.model_validate(
            {
                "metadata": {"name": "web-abc", "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.0.0.1"]}],
                "ports": [{"port": 8080, "name": "http"}],
            }
        ),
    )
    slices = discovery.list_namespaced_endpoint_slice(
        "default", label_selector="kubernetes.io/service-name=web"
    ).items
    assert [s.endpoints[0].addresses for s in slices if s.endpoints] == [["10.0.0.1"]]
    leases = client.CoordinationV1Api(api)
    lease = leases.create_namespaced_lease(
        "kube-system",
        client.V1Lease.model_validate(
            {"metadata": {"name": "leader"}, "spec": {"holderIdentity": "a"}}
        ),
    )
    assert lease.spec is not None
    lease.spec.holder_identity = "b"
    replaced = leases.replace_namespaced_lease("leader", "kube-system", lease)
    assert replaced.spec is not None and replaced.spec.holder_identity == "b"


def test_list_across_namespaces(core):
    core.create_namespace({"metadata": {"name": "team-a"}})
    for namespace in ("default", "team-a"):
        core.create_namespaced_service(namespace, _svc("api"))
    listed = core.list_service_for_all_namespaces()
    assert sorted((s.metadata.namespace, s.metadata.name) for s in listed.items) == [
        ("default", "api"),
        ("team-a", "api"),
    ]
    assert listed.metadata.resource_version.isdigit()
    assert [s.metadata.namespace for s in core.list_namespaced_service("team-a").items] == [
        "team-a"
    ]


def test_deleting_a_namespace_deletes_its_objects(core):
    core.create_namespace({"metadata": {"name": "doomed"}})
    core.create_namespaced_config_map("doomed", {"metadata": {"name": "cm"}})
    core.delete_namespace("doomed")
    assert (
        core.list_config_map_for_all_namespaces(field_selector="metadata.namespace=doomed").items
        == []
    )
    with pytest.raises(ApiException) as err:
        core.delete_namespace("default")
    assert err.value.status == 403


def test_delete_collection(core):
    for name, team in (("a", "x"), ("b", "x"), ("c", "y")):
        core.create_namespaced_config_map(
            "default", {"metadata": {"name": name, "labels": {"team": team}}}
        )
    core.delete_collection_namespaced_config_map("default", label_selector="team=x")
    assert [c.metadata.name for c in core.list_namespaced_config_map("default").items] == ["c"]


def test_dry_run_stores_nothing(core):
    created = core.create_namespaced_config_map(
        "default", {"metadata": {"name": "dry"}}, dry_run="All"
    )
    assert created.metadata.name == "dry" and created.metadata.uid
    assert core.list_namespaced_config_map("default").items == []
