"""`lazyload explain <ns>/<workload-or-service> [host]`: why a host is (or is not) in a Sidecar.

Reads, from the target (`access.Target`): the ServiceFence that applies (the fence of that name,
else the fence whose workload selector matches the workload's pod labels), its Events (those
sidecar-writer posts about a conflict), its Sidecar and whether
it carries the fence's revision (`lazyload.io/fence-revision`) and `SidecarReady`, every host of
the fence with its reasons (learned with first/last seen, spec, stable, selector, alias, expanded
from ...), the fence-reconciler's recent decisions about the caller
(`GET /api/v1/fences/{ns}/{name}/decisions`) and accesslog-ingest's recent rejections naming it
(`GET /api/v1/rejections`). For a host the fence does not hold it says why not, from those
records: dropped (dispatched elsewhere, an external host not allowed, no such Service), rejected
with ingest's or the reconciler's reason, expired, reset, waiting for the caller's Service,
ignored by policy, over the host cap, the caller unknown, or never seen.

`explain()` returns a plain dict (what `-o json|yaml` prints); `render()` prints it for people.
"""

from __future__ import annotations

from typing import Any

from lazyload_fence_reconciler import desiring, fences
from rich.console import Console
from rich.table import Table

from lazyload_cli import access

REVISION_ANNOTATION = "lazyload.io/fence-revision"
"""The annotation sidecar-writer puts on a Sidecar: the fence revision it carries."""


def explain(
    target: access.Target,
    namespace: str,
    name: str,
    host: str | None = None,
    *,
    cluster_domain: str = "cluster.local",
) -> dict[str, Any]:
    """Everything `explain` knows about the fence of `namespace/name` (and `host`)."""
    warnings: list[str] = []
    fence_obj = _find_fence(target, namespace, name)
    key_name = fence_obj["metadata"]["name"] if fence_obj else name
    out: dict[str, Any] = {
        "caller": f"{namespace}/{name}",
        "fence": None,
        "sidecar": None,
        "hosts": [],
        "events": [],
    }
    if fence_obj is not None:
        fence = fences.Fence.from_raw(fence_obj)
        out["fence"] = _fence_view(fence)
        out["hosts"] = _hosts(fence)
        out["sidecar"] = sidecar_state(target, fence)
        out["events"] = _events(target, fence)
    out["decisions"] = _decisions(target, namespace, key_name, warnings)
    out["rejections"] = _rejections(target, namespace, key_name, warnings)
    if host is not None:
        out["host"] = _why(out, _complete(target, host, namespace, cluster_domain))
    out["warnings"] = warnings
    return out


def fqdn(host: str, namespace: str, cluster_domain: str = "cluster.local") -> str:
    """A host as a fence holds it: lower case, no port; a short Service name completed the way
    ingest completes it (`svc` and `svc.ns` -> `svc.ns.svc.<domain>`)."""
    host = host.strip().lower().rstrip(".")
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    labels = host.split(".")
    if len(labels) == 1 and "/" not in host:
        return f"{host}.{namespace}.svc.{cluster_domain}"
    if len(labels) == 2 or (len(labels) == 3 and labels[2] == "svc"):
        return f"{labels[0]}.{labels[1]}.svc.{cluster_domain}"
    return host


def _complete(target: access.Target, host: str, namespace: str, cluster_domain: str) -> str:
    """`fqdn`, but `svc.ns` only becomes a Service FQDN when that Service exists (as ingest
    completes it): `nowhere.example` stays itself."""
    bare = host.strip().lower().rstrip(".").split(":", 1)[0]
    full = fqdn(host, namespace, cluster_domain)
    labels = bare.split(".")
    service = f"/api/v1/namespaces/{labels[-1] if len(labels) < 2 else labels[1]}/services/"
    if full != bare and len(labels) > 1 and target.get(service + labels[0]) is None:
        return bare
    return full


def sidecar_state(target: access.Target, fence: fences.Fence) -> dict[str, Any]:
    """The fence's Sidecar (read from the target) and its sync state (`sync_state`)."""
    path = f"{access.SIDECARS}/namespaces/{fence.namespace}/sidecars/{fence.name}"
    return sync_state(fence, target.get(path))


def sync_state(fence: fences.Fence, sidecar: dict[str, Any] | None) -> dict[str, Any]:
    """`sidecar` (None: there is none) against `fence`: `in-sync` (it carries the fence's
    revision and `SidecarReady` is not False), `failing` (`SidecarReady` is False),
    `out-of-sync` (another revision, or none yet), `not-rendered` (the fence is disabled or has no
    workload selector: no Sidecar is due)."""
    state = desiring.recorded(fence)
    ready = _condition(fence, "SidecarReady")
    revision = None
    if sidecar is not None:
        annotations = sidecar.get("metadata", {}).get("annotations") or {}
        value = str(annotations.get(REVISION_ANNOTATION, ""))
        revision = int(value) if value.isdigit() else None
    if ready is not None and ready.get("status") == "False":
        sync = "failing"
    elif not state.enabled or state.workload_selector is None:
        sync = "not-rendered" if sidecar is None else "out-of-sync"
    elif sidecar is not None and revision == fence.revision:
        sync = "in-sync"
    else:
        sync = "out-of-sync"
    egress = []
    if sidecar is not None:
        for rule in (sidecar.get("spec") or {}).get("egress") or []:
            egress += list(rule.get("hosts") or [])
    return {
        "name": fence.name,
        "exists": sidecar is not None,
        "revision": revision,
        "fence_revision": fence.revision,
        "sync": sync,
        "condition": ready,
        "egress_hosts": egress,
    }


def _find_fence(target: access.Target, namespace: str, name: str) -> dict[str, Any] | None:
    """The fence named `name`, else the one whose workload labels the pods of workload `name`
    (a Deployment, StatefulSet or DaemonSet of that name, or a pod) carry."""
    base = f"{access.FENCES}/namespaces/{namespace}/servicefences"
    found = target.get(f"{base}/{name}")
    if found is not None:
        return found
    labels = _workload_labels(target, namespace, name)
    if not labels:
        return None
    for obj in target.list(base):
        selector = desiring.recorded(fences.Fence.from_raw(obj)).workload_selector
        if selector and all(labels.get(k) == v for k, v in selector.items()):
            return obj
    return None


def _workload_labels(target: access.Target, namespace: str, name: str) -> dict[str, str]:
    for kind in ("deployments", "statefulsets", "daemonsets"):
        obj = target.get(f"/apis/apps/v1/namespaces/{namespace}/{kind}/{name}")
        if obj is not None:
            template = (obj.get("spec") or {}).get("template") or {}
            return dict((template.get("metadata") or {}).get("labels") or {})
    pod = target.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
    return dict((pod or {}).get("metadata", {}).get("labels") or {})


def _events(target: access.Target, fence: fences.Fence) -> list[dict[str, Any]]:
    """The Kubernetes Events about the fence (sidecar-writer posts conflicts and their end)."""
    items = target.list(
        f"/api/v1/namespaces/{fence.namespace}/events",
        fieldSelector=f"involvedObject.name={fence.name}",
    )
    out = []
    for event in items:
        involved = event.get("involvedObject") or {}
        if involved.get("kind") != "ServiceFence" or involved.get("name") != fence.name:
            continue  # a server that ignores the field selector: filtered here
        out.append(
            {
                "type": event.get("type", ""),
                "reason": event.get("reason", ""),
                "message": event.get("message", ""),
                "last": event.get("lastTimestamp") or event.get("eventTime") or "",
                "count": event.get("count", 1),
            }
        )
    return sorted(out, key=lambda e: str(e["last"]))


def _fence_view(fence: fences.Fence) -> dict[str, Any]:
    state = desiring.recorded(fence)
    return {
        "namespace": fence.namespace,
        "name": fence.name,
        "enabled": state.enabled,
        "revision": fence.revision,
        "workload_selector": state.workload_selector,
        "created_by": "fence-controller" if fence.created_by_controller else "user",
        "conditions": fence.raw_status.get("conditions", []),
    }


def _hosts(fence: fences.Fence) -> list[dict[str, Any]]:
    """Every host the fence knows: its domain status, whether the Sidecar gets it, and why."""
    state = desiring.recorded(fence)
    learned = fence.learned(default_time=0.0)
    statuses: dict[str, fences.DomainStatus] = {}
    for key, domain in fence.domains.items():
        for host in (key, *domain.hosts):
            statuses.setdefault(host, domain.status)
    rows = []
    for host in sorted(set(statuses) | set(state.hosts)):
        status = statuses.get(host)
        entry = learned.get(host)
        rows.append(
            {
                "host": host,
                "status": status.value if status is not None else "ACTIVE",
                "rendered": host in state.hosts,
                "reasons": [_reason(r) for r in state.reasons.get(host, ())],
                "first_seen": fences.format_time(entry.first_seen) if entry else None,
                "last_seen": fences.format_time(entry.last_seen) if entry else None,
            }
        )
    return rows


def _reason(reason: str) -> str:
    if reason.startswith(desiring.FROM):
        return f"expanded from {reason[len(desiring.FROM) :]}"
    return reason


def _decisions(
    target: access.Target, namespace: str, name: str, warnings: list[str]
) -> list[dict[str, Any]]:
    path = f"/api/v1/fences/{namespace}/{name}/decisions"
    try:
        bodies = target.admin_json("fence-reconciler", path)
    except access.AccessError as e:
        warnings.append(f"the reconciler's decisions are not available: {e}")
        return []
    merged = [d for body in bodies for d in body.get("decisions", [])]
    return sorted(merged, key=lambda d: d["last_at"])


def _rejections(
    target: access.Target, namespace: str, name: str, warnings: list[str]
) -> list[dict[str, Any]]:
    params = {"namespace": namespace, "name": name}
    try:
        bodies = target.admin_json("accesslog-ingest", "/api/v1/rejections", params)
    except access.AccessError as e:
        warnings.append(f"ingest's rejections are not available: {e}")
        return []
    merged = [r for body in bodies for r in body.get("items", [])]
    return sorted(merged, key=lambda r: r["last_at"])


_WHY = {
    "dropped": "dropped by the fence-reconciler",
    "rejected": "rejected by the fence-reconciler",
    "waiting": "waiting: the caller has no fence and its Service is not known (yet)",
    "ignored": "ignored by policy",
    "capped": "not learned: the fence is at its cap of learned hosts",
    "removed": "removed",
}


def _why(out: dict[str, Any], host: str) -> dict[str, Any]:
    """Whether `host` is in the fence, and if not why not."""
    rows = [h for h in out["hosts"] if h["host"] == host]
    decisions = [d for d in out["decisions"] if d["host"] == host]
    rejections = [r for r in out["rejections"] if _same_host(r["host"], host)]
    answer: dict[str, Any] = {
        "host": host,
        "present": bool(rows and rows[0]["rendered"]),
        "decisions": decisions,
        "rejections": rejections,
    }
    if answer["present"]:
        answer["why"] = "in the Sidecar: " + ", ".join(rows[0]["reasons"] or ["(no reason kept)"])
        return answer
    if rows:  # known but not rendered: expired
        answer["why"] = f"expired: the fence keeps it as {rows[0]['status']} (not rendered)"
        return answer
    latest = next((d for d in reversed(decisions) if d["outcome"] != "learned"), None)
    if latest is not None:
        answer["why"] = f"{_WHY.get(latest['outcome'], latest['outcome'])}: {latest['reason']}"
    elif rejections:
        last = rejections[-1]
        answer["why"] = f"dropped by accesslog-ingest: {last['reason']} (last {last['last_at']})"
    elif out["fence"] is None:
        answer["why"] = (
            f"caller unknown: no ServiceFence applies to {out['caller']} and lazyload has decided "
            "nothing about it (is it a Service or fenced workload, and does its traffic reach "
            "the global-sidecar?)"
        )
    else:
        answer["why"] = (
            "never seen: no call from this caller to the host reached lazyload since the services "
            "started (as far as the recent decisions and rejections go)"
        )
    return answer


def _same_host(seen: str, host: str) -> bool:
    return seen == host or (seen.count(".") < 2 and host.startswith(seen.split(":")[0] + "."))


def _condition(fence: fences.Fence, kind: str) -> dict[str, Any] | None:
    for condition in fence.raw_status.get("conditions") or []:
        if isinstance(condition, dict) and condition.get("type") == kind:
            return condition
    return None


def _table(*headers: str, title: str | None = None) -> Table:
    """A table whose cells wrap instead of being cut (hosts and times are long)."""
    table = Table(title=title)
    for header in headers:
        table.add_column(header, overflow="fold")
    return table


def render(out: dict[str, Any], console: Console) -> None:
    """`explain`'s answer for people."""
    fence, sidecar = out["fence"], out["sidecar"]
    if fence is None:
        console.print(f"[yellow]no ServiceFence applies to {out['caller']}")
    else:
        console.print(
            f"fence [bold]{fence['namespace']}/{fence['name']}[/] revision {fence['revision']}, "
            f"{'enabled' if fence['enabled'] else 'disabled'}, created by {fence['created_by']}, "
            f"workload selector {fence['workload_selector']}"
        )
    if sidecar is not None:
        colour = {"in-sync": "green", "failing": "red"}.get(sidecar["sync"], "yellow")
        message = (sidecar["condition"] or {}).get("message", "")
        console.print(
            f"sidecar {sidecar['name']}: [{colour}]{sidecar['sync']}[/] (Sidecar revision "
            f"{sidecar['revision']}, fence revision {sidecar['fence_revision']})"
            + (f": {message}" if message else "")
        )
    if out["hosts"]:
        table = _table("host", "status", "in Sidecar", "reasons", "first seen", "last seen")
        for h in out["hosts"]:
            table.add_row(
                h["host"],
                h["status"],
                "yes" if h["rendered"] else "no",
                ", ".join(h["reasons"]),
                h["first_seen"] or "",
                h["last_seen"] or "",
            )
        console.print(table)
    if "host" in out:
        answer = out["host"]
        colour = "green" if answer["present"] else "yellow"
        console.print(f"[{colour}]{answer['host']}[/]: {answer['why']}", soft_wrap=True)
    else:
        missing = [d for d in out["decisions"] if d["outcome"] != "learned"]
        if missing or out["rejections"]:
            table = _table("host", "outcome", "reason", "last", "count", title="not learned")
            for d in missing:
                table.add_row(d["host"], d["outcome"], d["reason"], d["last_at"], str(d["count"]))
            for r in out["rejections"]:
                table.add_row(r["host"], "ingest", r["reason"], r["last_at"], str(r["count"]))
            console.print(table)
    for event in out["events"]:
        colour = "red" if event["type"] == "Warning" else "dim"
        console.print(
            f"[{colour}]event {event['last']} {event['reason']}: {event['message']}[/]",
            soft_wrap=True,
        )
    for warning in out["warnings"]:
        console.print(f"[dim]note: {warning}", soft_wrap=True)
