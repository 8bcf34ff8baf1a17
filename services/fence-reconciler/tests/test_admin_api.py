"""The admin HTTP API and health of a running reconciler.

Covers: /readyz is ready once serving; `GET /api/v1/fences` lists fences; `GET
/api/v1/fences/{ns}/{name}` gives hosts with state and reasons (404 for none); `GET /api/v1/graph`
links services to services and external hosts; `POST .../reset` empties the learned hosts, keeps
spec hosts and publishes a new revision; the CLI's `list_fences` and `reset`; /metrics counts edges, writes and events.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from lazyload_common import subjects

DETAILS = "details.default.svc.cluster.local"
PATH = "/apis/microservice.slime.io/v1alpha1/namespaces/default/servicefences"


async def _setup(reconciler, kit) -> httpx.AsyncClient:  # type: ignore[no-untyped-def]
    kit.create_service("productpage")
    await reconciler.start()
    async with kit.events() as seen:
        await kit.publish(kit.edge(DETAILS), kit.edge("www.example.com", port=443))
        await seen.until(lambda e: len(e.hosts) == 2)
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{reconciler.admin_port}")


async def test_ready_list_and_detail(reconciler, kit) -> None:  # type: ignore[no-untyped-def]
    async with await _setup(reconciler, kit) as http:
        ready = await http.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"nats": True, "kube": True, "consumer": True}
        listed = (await http.get("/api/v1/fences")).json()["items"]
        assert [(f["namespace"], f["name"], f["hosts"]) for f in listed] == [
            ("default", "productpage", 2)
        ]
        assert listed[0]["revision"] == listed[0]["published_revision"]
        detail = (await http.get("/api/v1/fences/default/productpage")).json()
        hosts = {h["host"]: h for h in detail["hosts"]}
        assert hosts[DETAILS]["reasons"] == ["learned"] and hosts[DETAILS]["status"] == "ACTIVE"
        assert hosts["www.example.com"]["port"] == 443
        assert detail["workload_selector"] == {"app": "productpage"}
        assert (await http.get("/api/v1/fences/default/nope")).status_code == 404


async def test_graph(reconciler, kit) -> None:  # type: ignore[no-untyped-def]
    async with await _setup(reconciler, kit) as http:
        graph = (await http.get("/api/v1/graph")).json()
    nodes = {n["id"]: n["kind"] for n in graph["nodes"]}
    assert nodes == {
        "default/productpage": "service",
        "default/details": "service",
        "www.example.com": "external",
    }
    assert {(e["source"], e["target"]) for e in graph["edges"]} == {
        ("default/productpage", "default/details"),
        ("default/productpage", "www.example.com"),
    }


async def test_reset_forgets_learned_hosts(reconciler, kit) -> None:  # type: ignore[no-untyped-def]
    async with await _setup(reconciler, kit) as http:
        fence = kit.fence("productpage")
        fence["spec"]["host"] = {"test/*": {}}
        kit.api.replace(f"{PATH}/productpage", fence)
        async with kit.events(subjects.fence("default", "productpage")) as seen:
            await seen.until(lambda e: "test/*" in e.hosts)
            reset = await http.post("/api/v1/fences/default/productpage/reset")
            assert reset.status_code == 200, reset.text
            event = await seen.until(lambda e: e.hosts == ["test/*"])
        assert sorted(event.removed) == [DETAILS, "www.example.com"]
        assert reset.json()["rendered_hosts"] == ["test/*"]
        assert kit.fence("productpage")["status"]["learned"] == {}
        assert (await http.post("/api/v1/fences/default/nope/reset")).status_code == 404


async def test_metrics(reconciler, kit) -> None:  # type: ignore[no-untyped-def]
    async with await _setup(reconciler, kit) as http:
        text = (await http.get("/metrics")).text
    for name in (
        'lazyload_fence_edges_total{outcome="learned"}',
        'lazyload_fence_writes_total{op="create"}',
        'lazyload_fence_writes_total{op="status"}',
        'lazyload_fence_events_published_total{kind="changed"}',
        "lazyload_fence_conflicts_total",
    ):
        assert name in text


async def test_cli_list_and_reset(reconciler, kit) -> None:  # type: ignore[no-untyped-def]
    cli = pytest.importorskip("lazyload_cli.fences")
    async with await _setup(reconciler, kit) as http:
        url = str(http.base_url)
        listed = await asyncio.to_thread(cli.list_fences, url)
        assert [(f["name"], f["hosts"]) for f in listed] == [("productpage", 2)]
        detail = await asyncio.to_thread(cli.reset, url, "default", "productpage")
        assert detail["rendered_hosts"] == []
        with pytest.raises(cli.FenceApiError) as missing:
            await asyncio.to_thread(cli.reset, url, "default", "nope")
        assert missing.value.status == 404
