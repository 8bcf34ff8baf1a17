"""List filtering and paging through the official client.

Covers: labelSelector with `=`, `==`, `!=`, `in`, `notin`, exists, `!key` and combinations;
fieldSelector on `metadata.name` / `metadata.namespace` (`=`, `!=`); a malformed selector
giving 400; `limit` with `continue` tokens; selectors on custom objects.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiException

LABELS = {
    "a": {"app": "web", "tier": "front"},
    "b": {"app": "api", "tier": "back"},
    "c": {"app": "db"},
    "d": {},
}


@pytest.fixture
def labelled(core: client.CoreV1Api) -> client.CoreV1Api:
    for name, labels in LABELS.items():
        body = client.V1ConfigMap.model_validate({"metadata": {"name": name, "labels": labels}})
        core.create_namespaced_config_map("default", body)
    return core


def _names(core: client.CoreV1Api, **kwargs: Any) -> list[str]:
    found = core.list_namespaced_config_map("default", **kwargs).items
    return [c.metadata.name for c in found if c.metadata and c.metadata.name]


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=web", ["a"]),
        ("app==web", ["a"]),
        ("app!=web", ["b", "c", "d"]),
        ("app in (web, api)", ["a", "b"]),
        ("app notin (web,api)", ["c", "d"]),
        ("tier", ["a", "b"]),
        ("!tier", ["c", "d"]),
        ("app in (web,api),tier=back", ["b"]),
        ("app,!tier", ["c"]),
        ("", ["a", "b", "c", "d"]),
    ],
)
def test_label_selector(labelled, selector, expected):
    assert _names(labelled, label_selector=selector) == expected


def test_field_selector(labelled):
    assert _names(labelled, field_selector="metadata.name=b") == ["b"]
    assert _names(labelled, field_selector="metadata.name!=b") == ["a", "c", "d"]
    assert _names(labelled, field_selector="metadata.namespace=default,metadata.name==c") == ["c"]
    everywhere = labelled.list_config_map_for_all_namespaces(field_selector="metadata.namespace=x")
    assert everywhere.items == []


def test_malformed_selector_is_400(labelled):
    with pytest.raises(ApiException) as err:
        labelled.list_namespaced_config_map("default", label_selector="app in web")
    assert err.value.status == 400


def test_paging_with_limit_and_continue(labelled):
    first = labelled.list_namespaced_config_map("default", limit=3)
    assert [c.metadata.name for c in first.items] == ["a", "b", "c"]
    assert first.metadata.remaining_item_count == 1
    rest = labelled.list_namespaced_config_map(
        "default", limit=3, _continue=first.metadata._continue
    )
    assert [c.metadata.name for c in rest.items] == ["d"]
    assert not rest.metadata._continue


def test_selectors_on_custom_objects(custom, widgets, make_widget):
    for name, color in (("w1", "red"), ("w2", "blue")):
        body = make_widget(name)
        body["metadata"]["labels"] = {"color": color}
        custom.create_namespaced_custom_object(widgets, "v1", "default", "widgets", body)
    listed = custom.list_namespaced_custom_object(
        widgets, "v1", "default", "widgets", label_selector="color=blue"
    )
    assert [w["metadata"]["name"] for w in listed["items"]] == ["w2"]
    everywhere = custom.list_cluster_custom_object(
        widgets, "v1", "widgets", field_selector="metadata.name=w1"
    )
    assert [w["metadata"]["name"] for w in everywhere["items"]] == ["w1"]
