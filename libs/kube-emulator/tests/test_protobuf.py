"""Protobuf over HTTP, as the API server speaks it (`application/vnd.kubernetes.protobuf`).

Covers: a protobuf create/replace of built-in kinds stores the JSON object (answered in JSON when
the client also accepts JSON, as kubectl does); a client that accepts only protobuf gets
protobuf objects, lists, Status errors and success Statuses, and length-prefixed `WatchEvent`
frames from a watch; protobuf DeleteOptions; custom resources refuse protobuf bodies (415) and
protobuf-only clients (406), as the real server does; Tables stay JSON.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from lazyload_kube_emulator.kubeproto import MEDIA_TYPE, codec
from lazyload_testing.kube import KubeEmulator

BOTH = f"{MEDIA_TYPE},application/json"  # what kubectl's typed commands send


@pytest.fixture
def http(kube_emulator: KubeEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=kube_emulator.url, timeout=10) as session:
        yield session


def post_protobuf(http: httpx.Client, path: str, obj: dict, accept: str = BOTH) -> httpx.Response:
    headers = {"Content-Type": MEDIA_TYPE, "Accept": accept}
    return http.post(path, content=codec().encode(obj), headers=headers)


def namespace(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def test_protobuf_create_is_stored_as_json(http, core):
    created = post_protobuf(http, "/api/v1/namespaces", namespace("shop"))
    assert created.status_code == 201, created.text
    assert created.headers["content-type"] == "application/json"
    assert created.json()["status"] == {"phase": "Active"}
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings", "labels": {"app": "web"}},
        "data": {"mode": "fast"},
        "binaryData": {"blob": "AP8="},
    }
    created = post_protobuf(http, "/api/v1/namespaces/shop/configmaps", config_map)
    assert created.status_code == 201, created.text
    stored = core.read_namespaced_config_map("settings", "shop")
    assert stored.data == {"mode": "fast"}
    assert stored.binary_data == {"blob": "AP8="}
    assert stored.metadata.namespace == "shop" and stored.metadata.labels == {"app": "web"}


def test_protobuf_replace(http, core):
    assert post_protobuf(http, "/api/v1/namespaces", namespace("shop")).status_code == 201
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"ports": [{"port": 80, "targetPort": "http"}], "selector": {"app": "web"}},
    }
    created = post_protobuf(http, "/api/v1/namespaces/shop/services", service).json()
    created["spec"]["ports"][0]["targetPort"] = 8080
    replaced = http.put(
        "/api/v1/namespaces/shop/services/web",
        content=codec().encode(created),
        headers={"Content-Type": MEDIA_TYPE, "Accept": BOTH},
    )
    assert replaced.status_code == 200, replaced.text
    port = core.read_namespaced_service("web", "shop").spec.ports[0]
    assert port.target_port == 8080 and port.port == 80


def test_protobuf_only_clients_get_protobuf(http, core):
    only = {"Accept": MEDIA_TYPE}
    created = post_protobuf(http, "/api/v1/namespaces", namespace("shop"), accept=MEDIA_TYPE)
    assert created.status_code == 201
    assert created.headers["content-type"] == MEDIA_TYPE
    assert codec().decode(created.content)["metadata"]["name"] == "shop"

    got = http.get("/api/v1/namespaces/shop", headers=only)
    assert got.headers["content-type"] == MEDIA_TYPE
    assert codec().decode(got.content) == http.get("/api/v1/namespaces/shop").json()

    listed = codec().decode(http.get("/api/v1/namespaces", headers=only).content)
    assert listed["kind"] == "NamespaceList"
    assert "shop" in {item["metadata"]["name"] for item in listed["items"]}

    missing = http.get("/api/v1/namespaces/gone", headers=only)
    assert missing.status_code == 404 and missing.headers["content-type"] == MEDIA_TYPE
    status = codec().decode(missing.content)
    assert (status["kind"], status["reason"], status["code"]) == ("Status", "NotFound", 404)

    deleted = http.delete("/api/v1/namespaces/shop", headers=only)
    assert deleted.status_code == 200
    assert codec().decode(deleted.content)["status"] == "Success"


def test_protobuf_delete_options(http, core):
    assert post_protobuf(http, "/api/v1/namespaces", namespace("shop")).status_code == 201
    options = {
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "preconditions": {"uid": "not-the-uid"},
    }
    refused = http.request(
        "DELETE",
        "/api/v1/namespaces/shop",
        content=codec().encode(options),
        headers={"Content-Type": MEDIA_TYPE, "Accept": BOTH},
    )
    assert refused.status_code == 409, refused.text
    assert "Precondition failed: uid" in refused.json()["message"]
    assert core.read_namespace("shop").status.phase == "Active"


def test_protobuf_watch_frames(http, core):
    core.create_namespace({"metadata": {"name": "shop"}})
    watched = http.get(
        "/api/v1/namespaces",
        params={"watch": "true", "timeoutSeconds": "1", "fieldSelector": "metadata.name=shop"},
        headers={"Accept": f"{MEDIA_TYPE};stream=watch"},
    )
    assert watched.headers["content-type"] == f"{MEDIA_TYPE};stream=watch"
    data, events = watched.content, []
    while data:
        (size,) = struct.unpack(">I", data[:4])
        event_class = codec().message_class("k8s.io.apimachinery.pkg.apis.meta.v1.WatchEvent")
        event: Any = event_class.FromString(data[4 : 4 + size])  # fields: built at run time
        events.append((event.type, codec().decode(event.object.raw)))
        data = data[4 + size :]
    ((event_type, obj),) = events
    assert event_type == "ADDED"
    assert (obj["kind"], obj["metadata"]["name"]) == ("Namespace", "shop")


def test_tables_stay_json(http, core):
    table = f"{MEDIA_TYPE};as=Table;v=v1;g=meta.k8s.io"
    answer = http.get("/api/v1/namespaces", headers={"Accept": f"{table},application/json"})
    assert answer.headers["content-type"] == "application/json"
    assert answer.json()["kind"] == "Table"
    refused = http.get("/api/v1/namespaces", headers={"Accept": table})
    assert refused.status_code == 406 and refused.json()["reason"] == "NotAcceptable"


def test_custom_resources_are_never_protobuf(http, custom, widgets, make_widget):
    path = f"/apis/{widgets}/v1/namespaces/default/widgets"
    widget = make_widget("w1")
    refused = http.post(path, content=b"k8s\x00...", headers={"Content-Type": MEDIA_TYPE})
    assert refused.status_code == 415
    assert refused.json()["reason"] == "UnsupportedMediaType"
    custom.create_namespaced_custom_object(widgets, "v1", "default", "widgets", widget)
    not_acceptable = http.get(f"{path}/w1", headers={"Accept": MEDIA_TYPE})
    assert not_acceptable.status_code == 406
    # the Status itself is a built-in kind: the real server sends it in protobuf
    assert codec().decode(not_acceptable.content)["reason"] == "NotAcceptable"
    assert http.get(f"{path}/w1", headers={"Accept": BOTH}).json()["spec"] == widget["spec"]
    # the CRD itself is a built-in kind: protobuf is fine, and carries Istio's large schemas whole
    path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    crds = codec().decode(http.get(path, headers={"Accept": MEDIA_TYPE}).content)
    assert widgets in {crd["spec"]["group"] for crd in crds["items"]}
    as_json = http.get(path).json()["items"]
    for item in as_json:  # list items carry no kind in protobuf (nor in a real server's JSON)
        del item["kind"], item["apiVersion"]
    assert crds["items"] == as_json


def test_unsupported_body_types_name_protobuf_for_built_in_kinds(http):
    refused = http.post(
        "/api/v1/namespaces", content=b"<ns/>", headers={"Content-Type": "application/xml"}
    )
    assert refused.status_code == 415
    assert MEDIA_TYPE in refused.json()["message"]
    garbage = http.post(
        "/api/v1/namespaces", content=b"k8s\x00\xff", headers={"Content-Type": MEDIA_TYPE}
    )
    assert garbage.status_code == 400
    assert "the object provided is unrecognized (must be of type Namespace)" in garbage.text
