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


async def _setup(reconciler, kit) -> httpx.AsyncClient:
    kit.create_service("productpage")
    await reconciler.start()
    async with kit.events() as seen:
        await kit.publish(kit.edge(DETAILS), kit.edge("www.example.com", port=443))
        await seen.until(lambda e: len(e.hosts) == 2)
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{reconciler.admin_port}",
        headers={"Authorization": f"Bearer {reconciler.admin_token}"},
    )


async def test_ready_list_and_detail(reconciler, kit) -> None:
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


async def test_graph(reconciler, kit) -> None:
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


async def test_reset_forgets_learned_hosts(reconciler, kit) -> None:
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


async def test_metrics(reconciler, kit) -> None:
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


async def test_cli_list_and_reset(reconciler, kit) -> None:
    from lazyload_cli import fences as cli

    async with await _setup(reconciler, kit) as http:
        url = str(http.base_url)
        listed = await asyncio.to_thread(cli.list_fences, url)
        assert [(f["name"], f["hosts"]) for f in listed] == [("productpage", 2)]
        token = reconciler.admin_token
        with pytest.raises(cli.FenceApiError) as refused:
            await asyncio.to_thread(cli.reset, url, "default", "productpage")
        assert refused.value.status == 401
        detail = await asyncio.to_thread(cli.reset, url, "default", "productpage", token=token)
        assert detail["rendered_hosts"] == []
        with pytest.raises(cli.FenceApiError) as missing:
            await asyncio.to_thread(cli.reset, url, "default", "nope", token=token)
        assert missing.value.status == 404


async def test_resets_need_an_allowed_token(reconciler, kit) -> None:
    async with await _setup(reconciler, kit) as http:
        path = "/api/v1/fences/default/productpage/reset"
        anonymous = await http.post(path, headers={"Authorization": ""})
        assert anonymous.status_code == 401
        forged = await http.post(path, headers={"Authorization": "Bearer not-the-token"})
        assert forged.status_code == 401
        namespace = await http.post("/api/v1/fences/default/reset", headers={"Authorization": ""})
        assert namespace.status_code == 401
        assert kit.fence("productpage")["status"]["learned"]  # nothing was reset
        assert (await http.get("/docs")).status_code == 404  # off by default
        metrics = (await http.get("/metrics")).text
        assert 'lazyload_admin_refused_total{reason="no_token"}' in metrics


async def test_namespace_reset_resets_every_fence_of_the_namespace(reconciler, kit) -> None:
    kit.create_service("reviews")
    async with await _setup(reconciler, kit) as http:
        async with kit.events() as seen:
            await kit.publish(kit.edge(DETAILS, name="reviews"))
            await seen.until(lambda e: e.name == "reviews" and DETAILS in e.hosts)
        reset = await http.post("/api/v1/fences/default/reset")
        assert reset.status_code == 200, reset.text
        assert reset.json() == {"namespace": "default", "reset": ["productpage", "reviews"]}
        assert kit.fence("productpage")["status"]["learned"] == {}
        assert kit.fence("reviews")["status"]["learned"] == {}


@pytest.mark.real
async def test_kubernetes_auth_reviews_the_token(reconciler, kit, real_kube) -> None:
    """The chart's default: a TokenReview authenticates the bearer token, a SubjectAccessReview
    decides (update servicefences/status in the fence's namespace), as kube-rbac-proxy does."""
    from lazyload_common.settings import AdminSettings

    admin = AdminSettings(host="127.0.0.1", port=0, auth="kubernetes")
    reconciler.settings = reconciler.settings.model_copy(update={"admin": admin})
    accounts = "/api/v1/namespaces/default/serviceaccounts"
    for name in ("operator", "bystander"):
        kit.api.create(accounts, {"metadata": {"name": name}})
    rbac = "/apis/rbac.authorization.k8s.io/v1/namespaces/default"
    kit.api.create(
        f"{rbac}/roles",
        {
            "metadata": {"name": "fence-reset"},
            "rules": [
                {
                    "apiGroups": ["microservice.slime.io"],
                    "resources": ["servicefences/status"],
                    "verbs": ["update"],
                }
            ],
        },
    )
    kit.api.create(
        f"{rbac}/rolebindings",
        {
            "metadata": {"name": "fence-reset"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "fence-reset",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": "default"}],
        },
    )
    allowed = real_kube.service_account_token("default", "operator")
    other = real_kube.service_account_token("default", "bystander")
    async with await _setup(reconciler, kit) as http:
        path = "/api/v1/fences/default/productpage/reset"
        refused = await http.post(path, headers={"Authorization": f"Bearer {other}"})
        assert refused.status_code == 403, refused.text
        forged = await http.post(path, headers={"Authorization": "Bearer forged.jwt.token"})
        assert forged.status_code == 401
        assert kit.fence("productpage")["status"]["learned"]
        done = await http.post(path, headers={"Authorization": f"Bearer {allowed}"})
        assert done.status_code == 200, done.text
        assert kit.fence("productpage")["status"]["learned"] == {}
