"""Replace and patch semantics through the official client.

Covers: 409 Conflict on a replace with a stale resourceVersion (and success without one); JSON
merge patch (including deleting keys with null); JSON patch (add/replace/remove, failed `test`
giving 422); strategic merge patch on built-in kinds merging keyed lists; 415 for strategic merge
patch on custom resources; generation rules (1 on create, +1 only when spec changes, not for
metadata-only changes); no-op updates keeping the resourceVersion; 404 when patching a missing
object; finalizers delaying a delete until they are removed.
"""

from __future__ import annotations

import json

import pytest
from kubernetes import client
from kubernetes.client import ApiException


def _cm(
    core: client.CoreV1Api, name: str = "cm", data: dict[str, str] | None = None
) -> client.V1ConfigMap:
    body = {"metadata": {"name": name}, "data": data or {"a": "1"}}
    return core.create_namespaced_config_map("default", client.V1ConfigMap.model_validate(body))


def test_stale_replace_is_409_conflict(core):
    created = _cm(core)
    fresh = core.read_namespaced_config_map("cm", "default")
    fresh.data = {"a": "2"}
    core.replace_namespaced_config_map("cm", "default", fresh)
    created.data = {"a": "3"}
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("cm", "default", created)
    assert err.value.status == 409 and err.value.body is not None
    status = json.loads(err.value.body)
    assert status["reason"] == "Conflict" and "the object has been modified" in status["message"]
    assert created.metadata is not None
    created.metadata.resource_version = None
    assert core.replace_namespaced_config_map("cm", "default", created).data == {"a": "3"}


def test_merge_patch(core):
    _cm(core, data={"a": "1", "b": "2"})
    patched = core.patch_namespaced_config_map(
        "cm",
        "default",
        {"metadata": {"labels": {"x": "y"}}, "data": {"b": None, "c": "3"}},
        _content_type="application/merge-patch+json",
    )
    assert patched.data == {"a": "1", "c": "3"}
    assert patched.metadata.labels == {"x": "y"}


def test_json_patch(core):
    _cm(core, data={"a": "1", "b": "2"})
    ops = [
        {"op": "add", "path": "/data/c", "value": "3"},
        {"op": "replace", "path": "/data/a", "value": "10"},
        {"op": "remove", "path": "/data/b"},
    ]
    patched = core.patch_namespaced_config_map("cm", "default", ops)
    assert patched.data == {"a": "10", "c": "3"}
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_config_map(
            "cm", "default", [{"op": "test", "path": "/data/a", "value": "nope"}]
        )
    assert err.value.status == 422


def test_strategic_merge_patch_merges_keyed_lists(core):
    core.create_namespaced_service(
        "default",
        {
            "metadata": {"name": "svc"},
            "spec": {"ports": [{"name": "http", "port": 80}, {"name": "grpc", "port": 9000}]},
        },
    )
    patched = core.patch_namespaced_service(
        "svc",
        "default",
        {"spec": {"ports": [{"port": 80, "targetPort": 8080}]}},
        _content_type="application/strategic-merge-patch+json",
    )
    ports = {p.port: p.target_port for p in patched.spec.ports}
    assert ports == {80: 8080, 9000: 9000}


def test_strategic_merge_patch_is_415_for_custom_resources(custom, widgets, make_widget):
    custom.create_namespaced_custom_object(widgets, "v1", "default", "widgets", make_widget("w"))
    with pytest.raises(ApiException) as err:
        custom.patch_namespaced_custom_object(
            widgets,
            "v1",
            "default",
            "widgets",
            "w",
            {"spec": {"size": 2}},
            _content_type="application/strategic-merge-patch+json",
        )
    assert err.value.status == 415 and err.value.body is not None
    assert json.loads(err.value.body)["reason"] == "UnsupportedMediaType"


def test_generation_counts_spec_changes_only(custom, widgets, make_widget):
    args = (widgets, "v1", "default", "widgets")
    created = custom.create_namespaced_custom_object(*args, make_widget("w"))
    assert created["metadata"]["generation"] == 1
    labelled = custom.patch_namespaced_custom_object(
        *args, "w", {"metadata": {"labels": {"a": "b"}}}
    )
    assert labelled["metadata"]["generation"] == 1
    resized = custom.patch_namespaced_custom_object(*args, "w", {"spec": {"size": 5}})
    assert resized["metadata"]["generation"] == 2
    with_status = custom.patch_namespaced_custom_object_status(
        *args, "w", {"status": {"phase": "Ready"}}
    )
    assert with_status["metadata"]["generation"] == 2


def test_noop_update_keeps_resource_version(core):
    created = _cm(core)
    same = core.patch_namespaced_config_map(
        "cm", "default", {"data": {"a": "1"}}, _content_type="application/merge-patch+json"
    )
    assert created.metadata is not None
    assert same.metadata.resource_version == created.metadata.resource_version


def test_patch_missing_object_is_404(core):
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_config_map(
            "ghost", "default", {"data": {}}, _content_type="application/merge-patch+json"
        )
    assert err.value.status == 404


def test_finalizers_delay_deletion(core):
    core.create_namespaced_config_map(
        "default", {"metadata": {"name": "held", "finalizers": ["example.com/hold"]}}
    )
    core.delete_namespaced_config_map("held", "default")
    held = core.read_namespaced_config_map("held", "default")
    assert held.metadata.deletion_timestamp is not None
    core.patch_namespaced_config_map(
        "held",
        "default",
        {"metadata": {"finalizers": None}},
        _content_type="application/merge-patch+json",
    )
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("held", "default")
    assert err.value.status == 404
