"""RBAC objects, the opt-in authorizer and ownerReference garbage collection.

Covers: core/v1 ServiceAccounts and rbac.authorization.k8s.io/v1 Roles, RoleBindings,
ClusterRoles, ClusterRoleBindings through the official client (discovery, create, get, list,
replace, watch, delete); with `authorize` on, a ServiceAccount token allowed exactly what its
bound rules say (verbs, apiGroups, subresources, resourceNames, ClusterRole via RoleBinding),
403 Forbidden Status otherwise, the kubeconfig token as admin, discovery open to anyone; the
rule matcher on wildcards; background deletion of dependents (across CRD kinds, chains, other
live owners, finalizers) and `propagationPolicy: Orphan`.
"""

from __future__ import annotations

import json
import threading
from typing import TypeVar

import pytest
from kubernetes import client, watch
from lazyload_kube_emulator import EmulatorConfig
from lazyload_kube_emulator.authz import Attributes, rule_allows, service_account_token
from pydantic import BaseModel

RBAC = "rbac.authorization.k8s.io"
Model = TypeVar("Model", bound=BaseModel)


def _role(model: type[Model], name: str, rules: list[dict], namespace: str | None = None) -> Model:
    """A Role or ClusterRole (`model`) with these rules."""
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return model.model_validate({"metadata": meta, "rules": rules})


def _binding(
    model: type[Model],
    name: str,
    kind: str,
    role: str,
    sa: tuple[str, str],
    namespace: str | None = None,
) -> Model:
    """A RoleBinding or ClusterRoleBinding (`model`) of `role` (a `kind`) to ServiceAccount sa."""
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return model.model_validate(
        {
            "metadata": meta,
            "roleRef": {"apiGroup": RBAC, "kind": kind, "name": role},
            "subjects": [{"kind": "ServiceAccount", "namespace": sa[0], "name": sa[1]}],
        }
    )


def test_rbac_kinds_are_served_and_stored(api, core) -> None:
    rbac = client.RbacAuthorizationV1Api(api)
    found = {r.name: r for r in rbac.get_api_resources().resources}
    assert found["roles"].namespaced and not found["clusterroles"].namespaced
    assert {"rolebindings", "clusterrolebindings"} <= set(found)
    core_found = {r.name: r for r in core.get_api_resources().resources}
    assert core_found["serviceaccounts"].short_names == ["sa"]

    events: list[tuple[str, str]] = []
    stream = watch.Watch()

    def follow() -> None:
        for event in stream.stream(rbac.list_namespaced_role, "default", timeout_seconds=5):
            assert isinstance(event, dict)  # a watch of objects: events, not log lines
            events.append((event["type"], event["object"].metadata.name))
            if event["type"] == "DELETED":
                stream.stop()

    watcher = threading.Thread(target=follow)
    watcher.start()
    sa = core.create_namespaced_service_account("default", {"metadata": {"name": "robot"}})
    assert sa.metadata.uid and core.read_namespaced_service_account("robot", "default")
    rule = {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}
    rbac.create_namespaced_role("default", _role(client.V1Role, "reader", [rule]))
    role = rbac.read_namespaced_role("reader", "default")
    assert role.rules is not None
    role.rules[0].verbs = ["get", "list"]
    rbac.replace_namespaced_role("reader", "default", role)
    replaced = rbac.read_namespaced_role("reader", "default")
    assert [r.verbs for r in replaced.rules or []] == [["get", "list"]]
    rbac.create_namespaced_role_binding(
        "default", _binding(client.V1RoleBinding, "reader", "Role", "reader", ("default", "robot"))
    )
    rbac.create_cluster_role(_role(client.V1ClusterRole, "global", [rule]))
    rbac.create_cluster_role_binding(
        _binding(client.V1ClusterRoleBinding, "global", "ClusterRole", "global", ("default", "x"))
    )
    assert [b.role_ref.name for b in rbac.list_role_binding_for_all_namespaces().items] == [
        "reader"
    ]
    assert [r.metadata.name for r in rbac.list_cluster_role().items if r.metadata] == ["global"]
    bound = rbac.read_cluster_role_binding("global")
    assert [s.name for s in bound.subjects or []] == ["x"]
    rbac.delete_namespaced_role("reader", "default")
    watcher.join(timeout=10)
    assert events == [("ADDED", "reader"), ("MODIFIED", "reader"), ("DELETED", "reader")]
    with pytest.raises(client.ApiException) as error:
        rbac.read_namespaced_role("reader", "default")
    assert error.value.status == 404
    core.delete_namespaced_service_account("robot", "default")
    rbac.delete_cluster_role("global")
    rbac.delete_cluster_role_binding("global")
    assert not rbac.list_cluster_role_binding().items


@pytest.mark.parametrize(
    ("rule", "attrs", "allowed"),
    [
        ({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}, ("delete", "x", "a"), True),
        ({"verbs": ["get"], "apiGroups": ["x"], "resources": ["a"]}, ("get", "x", "a/status"), 0),
        ({"verbs": ["get"], "apiGroups": ["x"], "resources": ["a/*"]}, ("get", "x", "a/status"), 1),
        ({"verbs": ["get"], "apiGroups": ["x"], "resources": ["*/status"]}, ("get", "x", "a"), 0),
        ({"verbs": ["get"], "apiGroups": [""], "resources": ["a"]}, ("get", "x", "a"), False),
    ],
)
def test_rule_matching(rule: dict, attrs: tuple[str, str, str], allowed: bool) -> None:
    verb, group, resource = attrs
    plural, _, sub = resource.partition("/")
    request = Attributes(verb, group, plural, sub or None, "ns", "n")
    assert rule_allows(rule, request) == bool(allowed)


@pytest.fixture
def kube_emulator_config() -> EmulatorConfig:
    return EmulatorConfig(authorize=True)


def test_authorize_allows_only_what_the_bound_rules_grant(kube_emulator, api, core) -> None:
    rbac = client.RbacAuthorizationV1Api(api)  # the kubeconfig's token: the admin
    core.create_namespace({"metadata": {"name": "team"}})
    core.create_namespaced_service_account("team", {"metadata": {"name": "bot"}})
    rules = [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["services"], "verbs": ["update"], "resourceNames": ["s"]},
        {"apiGroups": ["networking.istio.io"], "resources": ["sidecars/status"], "verbs": ["*"]},
    ]
    rbac.create_namespaced_role("team", _role(client.V1Role, "bot", rules, "team"))
    rbac.create_namespaced_role_binding(
        "team", _binding(client.V1RoleBinding, "bot", "Role", "bot", ("team", "bot"))
    )
    events = [{"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}]
    rbac.create_cluster_role(_role(client.V1ClusterRole, "events", events))
    # A ClusterRole bound by a RoleBinding grants in that namespace only.
    rbac.create_namespaced_role_binding(
        "team", _binding(client.V1RoleBinding, "events", "ClusterRole", "events", ("team", "bot"))
    )
    for name in ("s", "t"):
        core.create_namespaced_service("team", {"metadata": {"name": name}, "spec": {}})

    bot_api = kube_emulator.api_client_as(service_account_token("team", "bot"))
    bot = client.CoreV1Api(bot_api)
    assert bot.list_namespaced_config_map("team").items == []
    assert client.VersionApi(bot_api).get_code().git_version  # discovery is open
    assert {r.name for r in bot.get_api_resources().resources} >= {"serviceaccounts"}
    body = core.read_namespaced_service("s", "team")
    body.metadata.labels = {"a": "b"}
    bot.replace_namespaced_service("s", "team", body)  # resourceNames: s
    event = client.CoreV1Event.model_validate(
        {"metadata": {"name": "e"}, "involvedObject": {"name": "s"}}
    )
    bot.create_namespaced_event("team", event)
    denied = [
        lambda: bot.read_namespaced_service("s", "team"),
        lambda: bot.replace_namespaced_service("t", "team", body),
        lambda: bot.list_namespaced_config_map("default"),
        lambda: bot.create_namespaced_config_map(
            "team", client.V1ConfigMap.model_validate({"metadata": {"name": "c"}})
        ),
        lambda: bot.create_namespaced_event("default", event),
        lambda: bot.list_namespace(),
        lambda: client.CustomObjectsApi(bot_api).list_namespaced_custom_object(
            "networking.istio.io", "v1", "team", "sidecars"
        ),
    ]
    sidecar = ("networking.istio.io", "v1", "team", "sidecars")
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        *sidecar,
        {"apiVersion": "networking.istio.io/v1", "kind": "Sidecar", "metadata": {"name": "x"}},
    )
    status = {"metadata": {"name": "x"}, "status": {"ok": True}}  # sidecars/status is granted
    client.CustomObjectsApi(bot_api).patch_namespaced_custom_object_status(*sidecar, "x", status)
    for call in denied:
        with pytest.raises(client.ApiException) as error:
            call()
        assert error.value.status == 403 and error.value.body is not None
        status = json.loads(error.value.body)
        assert status["reason"] == "Forbidden"
        assert 'User "system:serviceaccount:team:bot" cannot' in status["message"]
    anonymous = kube_emulator.api_client_as(None)
    with pytest.raises(client.ApiException) as error:
        client.CoreV1Api(anonymous).list_namespace()
    assert error.value.body is not None
    assert "system:anonymous" in json.loads(error.value.body)["message"]
    forbidden = [r for r in kube_emulator.requests() if r.status == 403]
    assert len(forbidden) == len(denied) + 1
    assert {r.user for r in forbidden} == {"system:serviceaccount:team:bot", "system:anonymous"}


def _crd_object(kind: str, name: str, owner: dict | None = None, **meta) -> dict:
    api_version = {
        "ServiceFence": "microservice.slime.io/v1alpha1",
        "Sidecar": "networking.istio.io/v1",
    }[kind]
    metadata = {"name": name, **meta}
    if owner is not None:
        metadata["ownerReferences"] = [
            {
                "apiVersion": owner["apiVersion"],
                "kind": owner["kind"],
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
                "controller": True,
            }
        ]
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata, "spec": {}}


def test_deleting_an_owner_collects_its_dependents(custom, core) -> None:
    fences = ("microservice.slime.io", "v1alpha1", "default", "servicefences")
    sidecars = ("networking.istio.io", "v1", "default", "sidecars")
    fence = custom.create_namespaced_custom_object(*fences, _crd_object("ServiceFence", "f"))
    sidecar = custom.create_namespaced_custom_object(*sidecars, _crd_object("Sidecar", "sc", fence))
    # A chain (Sidecar -> ConfigMap), an object kept by another live owner, a finalizer.
    chained = _crd_object("Sidecar", "chained", sidecar)["metadata"]
    core.create_namespaced_config_map("default", {"metadata": chained})
    keeper = core.create_namespaced_config_map("default", {"metadata": {"name": "keeper"}})
    shared = _crd_object("Sidecar", "shared", fence)
    shared["metadata"]["ownerReferences"].append(
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "keeper", "uid": keeper.metadata.uid}
    )
    custom.create_namespaced_custom_object(*sidecars, shared)
    custom.create_namespaced_custom_object(
        *sidecars, _crd_object("Sidecar", "held", fence, finalizers=["example.com/hold"])
    )
    custom.delete_namespaced_custom_object(*fences, "f")

    names = {
        o["metadata"]["name"]: o for o in custom.list_namespaced_custom_object(*sidecars)["items"]
    }
    assert set(names) == {"shared", "held"}
    assert [r["name"] for r in names["shared"]["metadata"]["ownerReferences"]] == ["keeper"]
    assert names["held"]["metadata"]["deletionTimestamp"]
    assert {c.metadata.name for c in core.list_namespaced_config_map("default").items} >= {"keeper"}
    assert "chained" not in {
        c.metadata.name for c in core.list_namespaced_config_map("default").items
    }
    # Orphan: the dependent stays, without the reference.
    owner = core.create_namespaced_config_map("default", {"metadata": {"name": "owner"}})
    owner_obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": owner.metadata.to_dict()}
    orphan = _crd_object("Sidecar", "orphan", owner_obj)
    custom.create_namespaced_custom_object(*sidecars, orphan)
    core.delete_namespaced_config_map(
        "owner", "default", body=client.V1DeleteOptions(propagation_policy="Orphan")
    )
    kept = custom.get_namespaced_custom_object(*sidecars, "orphan")
    assert "ownerReferences" not in kept["metadata"]
