"""The admin HTTP API of fence-reconciler (a FastAPI router mounted on the admin app).

- `GET  /api/v1/fences`: every fence, summarised;
- `GET  /api/v1/fences/{ns}/{name}`: one fence with its hosts, their state and reasons;
- `GET  /api/v1/fences/{ns}/{name}/decisions[?host=]`: what was recently decided about the
  fence's hosts (`deciding`: learned, dropped and why, rejected, waiting, ignored, capped,
  removed), also for a caller that has no fence (yet);
- `GET  /api/v1/graph`: the dependency graph (nodes: services and hosts; edges: fence -> host);
- `GET  /graph`: a page that draws that graph (`static/graph.html`: plain JS and SVG, nothing
  loaded from elsewhere), filters it by namespace and shows a clicked service's fence;
- `POST /api/v1/fences/{ns}/{name}/reset`: forget the learned hosts (spec hosts stay), which
  publishes a new revision;
- `POST /api/v1/fences/{ns}/reset`: the same for every fence of the namespace (Slime's
  `svfReset?ns=`).

The resets need a bearer token allowed to `update servicefences/status` in the namespace
(`adminauth`: 401 without one, 403 when not allowed); the reads stay open.
Reads come from the watch cache; handlers are async so they run in the event loop with it.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import HTMLResponse
from lazyload_common import adminauth, errors, kube

from lazyload_fence_reconciler import desiring, fences, reconciling, watching


def graph_page() -> str:
    """The HTML of the dependency graph page (it reads `/api/v1/graph` and the fence views of
    the server that serves it; `lazyload graph --serve` serves the same file)."""
    return resources.files("lazyload_fence_reconciler").joinpath("static/graph.html").read_text()


def create_page_router() -> APIRouter:
    """`GET /graph`: the dependency graph page."""
    router = APIRouter(tags=["graph"])

    @router.get("/graph", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(graph_page())

    return router


RESET = adminauth.Action(
    verb="update", group="microservice.slime.io", resource="servicefences", subresource="status"
)


def create_router(
    reconciler: reconciling.Reconciler,
    cluster: watching.Cluster,
    *,
    cluster_domain: str,
    guard: adminauth.AdminGuard,
) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["fences"])
    may_reset = [Depends(guard.require(RESET))]

    @router.get("/fences")
    async def list_fences() -> dict[str, Any]:
        return {"items": [_summary(reconciler, o) for o in cluster.all_fences()]}

    @router.get("/fences/{namespace}/{name}")
    async def get_fence(namespace: str, name: str) -> dict[str, Any]:
        obj = cluster.fence((namespace, name))
        if obj is None:
            raise HTTPException(404, f"no ServiceFence {namespace}/{name}")
        return _detail(reconciler, obj)

    @router.get("/fences/{namespace}/{name}/decisions")
    async def get_decisions(namespace: str, name: str, host: str | None = None) -> dict[str, Any]:
        key = (namespace, name)
        kept = reconciler.decisions.of(key, host)
        return {
            "namespace": namespace,
            "name": name,
            "fence": cluster.fence(key) is not None,
            "decisions": [d.as_dict() for d in kept],
            "per_fence_limit": reconciler.decisions.per_fence,
        }

    @router.post("/fences/{namespace}/reset", dependencies=may_reset)
    async def reset_namespace(namespace: str) -> dict[str, Any]:
        reset = []
        for key in cluster.fence_keys(namespace):
            try:
                if await reconciler.reconcile(key, reset=True) is not None:
                    reset.append(key[1])
            except errors.LazyloadError as e:
                raise HTTPException(503, f"reset of {key[0]}/{key[1]} failed: {e}") from e
        return {"namespace": namespace, "reset": reset}

    @router.post("/fences/{namespace}/{name}/reset", dependencies=may_reset)
    async def reset_fence(namespace: str, name: str) -> dict[str, Any]:
        try:
            obj = await reconciler.reconcile((namespace, name), reset=True)
        except errors.LazyloadError as e:
            raise HTTPException(503, f"reset failed: {e}") from e
        if obj is None:
            raise HTTPException(404, f"no ServiceFence {namespace}/{name}")
        return _detail(reconciler, obj)

    @router.get("/graph")
    async def graph() -> dict[str, Any]:
        return _graph(cluster.all_fences(), cluster_domain)

    return router


def _summary(reconciler: reconciling.Reconciler, obj: kube.RawObject) -> dict[str, Any]:
    fence = fences.Fence.from_raw(obj)
    state = desiring.recorded(fence)
    sent = reconciler.sent.get(fence.key)
    return {
        "namespace": fence.namespace,
        "name": fence.name,
        "uid": fence.uid,
        "enabled": fence.enable,
        "revision": fence.revision,
        "published_revision": sent.state.revision if sent and sent.uid == fence.uid else None,
        "hosts": len(state.hosts),
        "created_by": "fence-controller" if fence.created_by_controller else "user",
    }


def _detail(reconciler: reconciling.Reconciler, obj: kube.RawObject) -> dict[str, Any]:
    fence = fences.Fence.from_raw(obj)
    state = desiring.recorded(fence)
    learned = fence.learned(default_time=0.0)
    hosts = []
    for host, status in _host_states(fence.domains).items():
        entry = learned.get(host)
        hosts.append(
            {
                "host": host,
                "status": status.value,
                "rendered": status.rendered,
                "reasons": list(state.reasons.get(host, ())),
                "first_seen": fences.format_time(entry.first_seen) if entry else None,
                "last_seen": fences.format_time(entry.last_seen) if entry else None,
                "port": entry.port if entry else None,
            }
        )
    return {
        **_summary(reconciler, obj),
        "workload_selector": state.workload_selector,
        "rendered_hosts": list(state.hosts),
        "hosts": hosts,
        "conditions": fence.raw_status.get("conditions", []),
    }


def _host_states(domains: dict[str, fences.Domain]) -> dict[str, fences.DomainStatus]:
    """Every domain key and every host a domain expands to, with the most alive state."""
    rank = {fences.DomainStatus.EXPIRE: 0, fences.DomainStatus.EXPIREWAIT: 1}
    out: dict[str, fences.DomainStatus] = {}
    for key, domain in domains.items():
        for host in (key, *domain.hosts):
            old = out.get(host)
            if old is None or rank.get(domain.status, 2) > rank.get(old, 2):
                out[host] = domain.status
    return dict(sorted(out.items()))


def _graph(objs: list[kube.RawObject], cluster_domain: str) -> dict[str, Any]:
    """Services are nodes `ns/name`; a host that is a Service FQDN becomes that Service's node."""
    nodes: dict[str, dict[str, Any]] = {}
    edges: list[dict[str, Any]] = []
    suffix = f".svc.{cluster_domain}"
    for obj in objs:
        fence = fences.Fence.from_raw(obj)
        source = f"{fence.namespace}/{fence.name}"
        nodes[source] = {"id": source, "kind": "service", "fenced": True}
        state = desiring.recorded(fence)
        for host in state.hosts:
            target, kind = _node_of(host, suffix)
            nodes.setdefault(target, {"id": target, "kind": kind, "fenced": False})
            edges.append(
                {"source": source, "target": target, "host": host, "reasons": state.reasons[host]}
            )
    return {"nodes": sorted(nodes.values(), key=lambda n: n["id"]), "edges": edges}


def _node_of(host: str, suffix: str) -> tuple[str, str]:
    if host.endswith("/*"):
        return host, "namespace"
    if host.endswith(suffix):
        parts = host[: -len(suffix)].split(".")
        if len(parts) == 2:
            return f"{parts[1]}/{parts[0]}", "service"
    return host, "external"
