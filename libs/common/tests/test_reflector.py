"""Reflector against the Kubernetes API server: a relist in pages (`limit`/`continue`) gives the
whole store, stored objects have interned strings, and the watch goes on from the list."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from lazyload_common import kube

CONFIG_MAPS = "/api/v1/namespaces/default/configmaps"


def _config_map(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"cm-{i}", "namespace": "default", "labels": {"team": "mesh"}},
        "data": {"host": "reviews.default.svc.cluster.local"},
    }


async def _until(check: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


async def test_relist_in_pages_then_watch(kube_cluster: Any) -> None:
    api = kube.KubeApi(kube_cluster.api_client())
    for i in range(7):
        api.create(CONFIG_MAPS, _config_map(i))
    seen: list[tuple[str, str]] = []
    reflector = kube.Reflector(
        api,
        CONFIG_MAPS,
        on_change=lambda kind, obj: seen.append((kind, obj.get("metadata", {}).get("name", ""))),
        loop=asyncio.get_running_loop(),
        page_size=3,
        watch_timeout=5,
    )
    kube_cluster.clear_requests()
    reflector.start()
    try:
        await asyncio.wait_for(reflector.synced.wait(), 10)
        pages = [r for r in kube_cluster.requests() if "limit=3" in str(r.query)]
        assert len(pages) == 3, pages  # 3 + 3 + 1
        assert sorted(reflector.store) == [("default", f"cm-{i}") for i in range(7)]
        assert seen[-1] == ("SYNCED", "")
        assert sorted(name for kind, name in seen if kind == "ADDED") == sorted(
            f"cm-{i}" for i in range(7)
        )
        # a real API server's managedFields are not kept (they doubled a fence's memory)
        assert all("managedFields" not in o["metadata"] for o in reflector.store.values())
        hosts = [o["data"]["host"] for o in reflector.store.values()]
        assert all(h is hosts[0] for h in hosts)  # one shared copy of an equal string
        api.create(CONFIG_MAPS, _config_map(7))
        await _until(lambda: ("default", "cm-7") in reflector.store)
        assert reflector.store[("default", "cm-7")]["data"]["host"] is hosts[0]
    finally:
        reflector.stop()


def test_compact_keeps_values_and_shares_strings() -> None:
    def build() -> dict[str, Any]:  # equal strings, built at run time: distinct objects
        return {"a": ["".join(["x"] * 30), {"b": 1, "c": None, "d": True}], "e": 2.5}

    raw, other = build(), build()
    assert raw["a"][0] is not other["a"][0]
    one, two = kube.compact(raw), kube.compact(other)
    assert one == raw == two
    assert one["a"][0] is two["a"][0] is sys.intern("x" * 30)
    one["a"].append("new")  # a plain, mutable structure
    assert two["a"] == other["a"]


def _widget_crd(versions: list[str]) -> dict[str, Any]:
    schema = {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.lazyload.io"},
        "spec": {
            "group": "example.lazyload.io",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {"name": v, "served": True, "storage": i == 0, "schema": schema}
                for i, v in enumerate(versions)
            ],
        },
    }


async def _create_widget(api: kube.KubeApi, version: str, name: str) -> None:
    """Create Widget `name` at `version` once the server serves it there (a new or changed CRD
    is served a moment after it is stored)."""
    path = f"/apis/example.lazyload.io/{version}/namespaces/default/widgets"
    body = {
        "apiVersion": f"example.lazyload.io/{version}",
        "kind": "Widget",
        "metadata": {"name": name},
    }
    async with asyncio.timeout(30):
        while True:
            try:
                api.create(path, body)
                return
            except kube.KubeNotFound:
                await asyncio.sleep(0.1)


async def test_versioned_path_follows_what_the_server_serves(kube_cluster: Any) -> None:
    """Like networking.istio.io on Istio 1.14-1.21 (v1beta1, v1alpha3; no v1): the reflector
    waits for the kind to be served, then lists and watches it at the newest served version
    (discovery may show a new CRD's versions one after the other: then within a watch)."""
    api = kube.KubeApi(kube_cluster.api_client())
    template = "/apis/example.lazyload.io/{version}/widgets"
    versions = ("v1", "v1beta1", "v1alpha3")
    assert kube.served_version(api, "example.lazyload.io", "widgets", versions) is None
    seen: list[str] = []
    reflector = kube.Reflector(
        kube.KubeApi(kube_cluster.api_client()),
        template,
        on_change=lambda kind, obj: seen.append(kind),
        loop=asyncio.get_running_loop(),
        versions=versions,
        watch_timeout=1,
    )
    reflector.start()
    try:
        api.create(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            _widget_crd(["v1beta1", "v1alpha3"]),
        )
        await _create_widget(api, "v1beta1", "w1")
        async with asyncio.timeout(30):
            await asyncio.wait_for(reflector.synced.wait(), 30)
            while ("default", "w1") not in reflector.store:
                await asyncio.sleep(0.05)
        assert kube.served_version(api, "example.lazyload.io", "widgets", versions) == "v1beta1"
        await _until(lambda: reflector.path == "/apis/example.lazyload.io/v1beta1/widgets", 15)
        assert ("default", "w1") in reflector.store
    finally:
        reflector.stop()


async def test_a_newly_served_version_is_followed(kube_emulator: Any) -> None:
    """A CRD that comes to serve an earlier version of `versions` (an Istio upgrade adding v1):
    after its next watch ends, the reflector relists and watches at that version, and its store
    keeps the objects. On the Kubernetes API emulator, whose watches outlive a change of their
    CRD (a real API server ends them, and the relist after that re-resolves the version too), so
    only the reflector's own check after each watch can make the move."""
    api = kube.KubeApi(kube_emulator.api_client())
    crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    api.create(crds, _widget_crd(["v1alpha3"]))
    await _create_widget(api, "v1alpha3", "w1")
    reflector = kube.Reflector(
        kube.KubeApi(kube_emulator.api_client()),
        "/apis/example.lazyload.io/{version}/widgets",
        on_change=lambda kind, obj: None,
        loop=asyncio.get_running_loop(),
        versions=("v1", "v1beta1", "v1alpha3"),
        watch_timeout=1,
    )
    reflector.start()
    try:
        await asyncio.wait_for(reflector.synced.wait(), 30)
        assert reflector.path == "/apis/example.lazyload.io/v1alpha3/widgets"
        assert ("default", "w1") in reflector.store
        api.merge_patch(
            f"{crds}/widgets.example.lazyload.io",
            {"spec": _widget_crd(["v1alpha3", "v1beta1"])["spec"]},
        )
        await _until(lambda: reflector.path == "/apis/example.lazyload.io/v1beta1/widgets", 30)
        assert reflector.store[("default", "w1")]["apiVersion"] == "example.lazyload.io/v1beta1"
        await _create_widget(api, "v1beta1", "w2")
        await _until(lambda: ("default", "w2") in reflector.store)
    finally:
        reflector.stop()
