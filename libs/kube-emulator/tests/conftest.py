"""Shared fixtures of the emulator tests: official API clients and test CRDs.

Test modules are imported with `--import-mode=importlib`, so helpers reach them as fixtures:
`make_widget_crd`, `make_widget`, `make_gadget_crd` are factories.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client
from lazyload_testing.kube import KubeEmulator

GROUP = "example.com"
WIDGET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "required": ["size"],
            "properties": {
                "size": {"type": "integer", "minimum": 1},
                "color": {"type": "string", "enum": ["red", "blue"]},
                "port": {"x-kubernetes-int-or-string": True},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "tags": {"type": "array", "items": {"type": "string"}},
                "note": {"type": "string", "nullable": True},
            },
        },
        "status": {
            "type": "object",
            "properties": {
                "phase": {"type": "string"},
                "observedGeneration": {"type": "integer"},
            },
        },
    },
}


def _crd(scope: str, names: dict[str, Any], versions: list[dict[str, Any]]) -> dict:
    """A CRD of `GROUP` named by `names` (its plural first)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{names['plural']}.{GROUP}"},
        "spec": {"group": GROUP, "scope": scope, "names": names, "versions": versions},
    }


def _widget_crd(versions: tuple[str, ...] = ("v1", "v1beta1"), status: bool = True) -> dict:
    """A namespaced `widgets.example.com` CRD served at the given versions (first = storage)."""
    names = {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]}
    return _crd(
        "Namespaced",
        names,
        [
            {
                "name": v,
                "served": True,
                "storage": i == 0,
                "subresources": {"status": {}} if status else {},
                "schema": {"openAPIV3Schema": copy.deepcopy(WIDGET_SCHEMA)},
            }
            for i, v in enumerate(versions)
        ],
    )


def _gadget_crd() -> dict:
    """A cluster-scoped `gadgets.example.com` CRD without a status subresource."""
    schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return _crd(
        "Cluster",
        {"plural": "gadgets", "kind": "Gadget"},
        [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": schema}}],
    )


def _widget(name: str, size: int = 1, **spec: Any) -> dict:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"size": size, **spec},
    }


@pytest.fixture
def api(kube_emulator: KubeEmulator) -> client.ApiClient:
    return kube_emulator.api_client()


@pytest.fixture
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture
def custom(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


@pytest.fixture
def extensions(api: client.ApiClient) -> client.ApiextensionsV1Api:
    return client.ApiextensionsV1Api(api)


@pytest.fixture
def widgets(extensions: client.ApiextensionsV1Api) -> Iterator[str]:
    """Install the widget CRD; yields its group."""
    crd = client.V1CustomResourceDefinition.model_validate(_widget_crd())
    extensions.create_custom_resource_definition(crd)
    yield GROUP


@pytest.fixture
def make_widget_crd() -> Callable[..., dict]:
    return _widget_crd


@pytest.fixture
def make_widget() -> Callable[..., dict]:
    return _widget


@pytest.fixture
def make_gadget_crd() -> Callable[[], dict]:
    return _gadget_crd
