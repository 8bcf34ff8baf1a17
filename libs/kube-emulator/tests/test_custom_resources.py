"""CRDs and custom objects through the official client.

Covers: creating a CRD (status conditions, accepted names); CRUD of custom objects at every
served version (one object seen through all of them); the status subresource (writes to the main
resource ignore `.status`, writes to `/status` ignore everything else, status dropped on create);
openAPIV3Schema validation (422 Invalid with causes: types, enum, minimum, required,
int-or-string, nullable); pruning of unknown fields and `x-kubernetes-preserve-unknown-fields`;
strict field validation; cluster-scoped CRDs; invalid CRDs; deleting a CRD deleting its objects.
"""

from __future__ import annotations

import json

import pytest
from kubernetes.client import ApiException

ARGS = ("example.com", "v1", "default", "widgets")


def _causes(err: pytest.ExceptionInfo) -> dict[str, str]:
    body = json.loads(err.value.body)
    assert body["kind"] == "Status" and body["reason"] == "Invalid"
    return {c["field"]: c["message"] for c in body["details"]["causes"]}


def test_crd_is_established(extensions, make_widget_crd):
    crd = extensions.create_custom_resource_definition(make_widget_crd())
    conditions = {c.type: c.status for c in crd.status.conditions}
    assert conditions == {"Established": "True", "NamesAccepted": "True"}
    assert crd.status.accepted_names.kind == "Widget"
    assert crd.status.stored_versions == ["v1"]


def test_custom_object_crud_across_versions(custom, widgets, make_widget):
    created = custom.create_namespaced_custom_object(*ARGS, make_widget("w", color="red"))
    assert created["apiVersion"] == "example.com/v1" and created["metadata"]["uid"]
    beta = custom.get_namespaced_custom_object("example.com", "v1beta1", "default", "widgets", "w")
    assert beta["apiVersion"] == "example.com/v1beta1"
    assert beta["metadata"]["uid"] == created["metadata"]["uid"]
    beta["spec"]["size"] = 3
    replaced = custom.replace_namespaced_custom_object(
        "example.com", "v1beta1", "default", "widgets", "w", beta
    )
    assert replaced["spec"]["size"] == 3
    assert custom.get_namespaced_custom_object(*ARGS, "w")["spec"]["size"] == 3
    listed = custom.list_namespaced_custom_object(*ARGS)
    assert listed["kind"] == "WidgetList" and len(listed["items"]) == 1
    deleted = custom.delete_namespaced_custom_object(*ARGS, "w")
    assert deleted["metadata"]["name"] == "w"
    with pytest.raises(ApiException) as err:
        custom.get_namespaced_custom_object(*ARGS, "w")
    assert err.value.status == 404


def test_status_subresource_semantics(custom, widgets, make_widget):
    body = make_widget("w")
    body["status"] = {"phase": "Ignored"}
    created = custom.create_namespaced_custom_object(*ARGS, body)
    assert "status" not in created
    status = custom.replace_namespaced_custom_object_status(
        *ARGS, "w", {**created, "spec": {"size": 99}, "status": {"phase": "Ready"}}
    )
    assert status["status"] == {"phase": "Ready"} and status["spec"]["size"] == 1
    main = custom.patch_namespaced_custom_object(
        *ARGS, "w", {"spec": {"size": 2}, "status": {"phase": "Hacked"}}
    )
    assert main["spec"]["size"] == 2 and main["status"] == {"phase": "Ready"}
    got = custom.get_namespaced_custom_object_status(*ARGS, "w")
    assert got["status"] == {"phase": "Ready"}
    patched = custom.patch_namespaced_custom_object_status(
        *ARGS,
        "w",
        [{"op": "add", "path": "/status/observedGeneration", "value": 2}],
        _content_type="application/json-patch+json",
    )
    assert patched["status"] == {"phase": "Ready", "observedGeneration": 2}


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"size": "big"}, "spec.size"),
        ({"size": 0}, "spec.size"),
        ({"size": 1, "color": "green"}, "spec.color"),
        ({"size": 1, "port": 1.5}, "spec.port"),
        ({"size": 1, "tags": ["a", 2]}, "spec.tags[1]"),
        ({}, "spec.size"),
    ],
)
def test_schema_validation_is_422(custom, widgets, make_widget, spec, field):
    body = make_widget("w")
    body["spec"] = spec
    with pytest.raises(ApiException) as err:
        custom.create_namespaced_custom_object(*ARGS, body)
    assert err.value.status == 422
    assert field in _causes(err)


def test_replace_is_validated_too(custom, widgets, make_widget):
    created = custom.create_namespaced_custom_object(*ARGS, make_widget("w"))
    created["spec"]["color"] = "purple"
    with pytest.raises(ApiException) as err:
        custom.replace_namespaced_custom_object(*ARGS, "w", created)
    assert "spec.color" in _causes(err)


def test_schema_accepts_valid_variants(custom, widgets, make_widget):
    for name, port in (("a", 80), ("b", "http")):
        custom.create_namespaced_custom_object(*ARGS, make_widget(name, port=port, note=None))


def test_unknown_fields_are_pruned_unless_preserved(custom, widgets, make_widget):
    body = make_widget("w", extra={"free": {"form": True}}, bogus="dropped")
    body["topLevel"] = "dropped"
    created = custom.create_namespaced_custom_object(*ARGS, body)
    assert created["spec"] == {"size": 1, "extra": {"free": {"form": True}}}
    assert "topLevel" not in created
    with pytest.raises(ApiException) as err:
        custom.create_namespaced_custom_object(
            *ARGS, make_widget("x", bogus=1), field_validation="Strict"
        )
    assert err.value.status == 400 and err.value.body is not None
    assert 'unknown field "spec.bogus"' in json.loads(err.value.body)["message"]


def test_cluster_scoped_crd(api, custom, extensions, make_gadget_crd):
    extensions.create_custom_resource_definition(make_gadget_crd())
    body = {
        "apiVersion": "example.com/v1",
        "kind": "Gadget",
        "metadata": {"name": "g"},
        "anything": {"goes": [1, 2]},
    }
    created = custom.create_cluster_custom_object("example.com", "v1", "gadgets", body)
    assert "namespace" not in created["metadata"] and created["anything"] == {"goes": [1, 2]}
    created["status"] = {"seen": True}
    updated = custom.replace_cluster_custom_object("example.com", "v1", "gadgets", "g", created)
    assert updated["status"] == {"seen": True} and updated["metadata"]["generation"] == 2
    with pytest.raises(ApiException) as err:
        custom.get_cluster_custom_object_status("example.com", "v1", "gadgets", "g")
    assert err.value.status == 404


def test_invalid_crd_is_422(extensions, make_widget_crd):
    crd = make_widget_crd()
    crd["metadata"]["name"] = "wrong.example.com"
    crd["spec"]["versions"][1]["storage"] = True
    with pytest.raises(ApiException) as err:
        extensions.create_custom_resource_definition(crd)
    assert err.value.status == 422
    assert {"metadata.name", "spec.versions"} <= set(_causes(err))


def test_deleting_a_crd_deletes_its_objects(
    custom, extensions, widgets, make_widget, make_widget_crd
):
    custom.create_namespaced_custom_object(*ARGS, make_widget("w"))
    extensions.delete_custom_resource_definition("widgets.example.com")
    with pytest.raises(ApiException) as err:
        custom.list_namespaced_custom_object(*ARGS)
    assert err.value.status == 404
    extensions.create_custom_resource_definition(make_widget_crd())
    assert custom.list_namespaced_custom_object(*ARGS)["items"] == []
