"""Pure rendering: a `FenceChanged` event and the settings become the desired Istio `Sidecar`.

The shape is Slime's (slime-lazyload.md §4): name and namespace of the fence, one egress listener
with only `hosts` (sorted, unique), the fence's workload selector, an ownerReference to the
ServiceFence. lazyload adds the `app.kubernetes.io/managed-by: lazyload` label (the writer never
touches a Sidecar without it) and the fence revision as an annotation (stale events are ignored).
No I/O here and no validation: `validating` checks what this module produced.
"""

from __future__ import annotations

from typing import Any

from lazyload_common import events

from lazyload_sidecar_writer import errors
from lazyload_sidecar_writer.settings import WriterSettings

RawObject = dict[str, Any]

GROUP = "networking.istio.io"
KIND = "Sidecar"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "lazyload"
REVISION_LABEL = "istio.io/rev"
OWNED_LABELS = frozenset({MANAGED_BY_LABEL, REVISION_LABEL})
"""The labels lazyload sets on its Sidecars; any other label is another tool's, and kept."""
FENCE_REVISION_ANNOTATION = "lazyload.io/fence-revision"
FENCE_API_VERSION = "microservice.slime.io/v1alpha1"
FENCE_KIND = "ServiceFence"


def render(event: events.FenceChanged, settings: WriterSettings) -> RawObject:
    """The Sidecar of an enabled fence; raise `Unrenderable` when it has no workload selector."""
    if not event.workload_selector:
        # None means the reconciler could not find one; {} would select every pod of the
        # namespace, which is never what a per-service fence means.
        raise errors.Unrenderable(
            f"fence {event.namespace}/{event.name} has no workload selector; no Sidecar written"
        )
    metadata: RawObject = {
        "name": event.name,
        "namespace": event.namespace,
        "labels": labels(settings),
        "annotations": {FENCE_REVISION_ANNOTATION: str(event.revision)},
    }
    if event.uid:
        metadata["ownerReferences"] = [owner_reference(event)]
    return {
        "apiVersion": f"{GROUP}/{settings.sidecar.api_version}",
        "kind": KIND,
        "metadata": metadata,
        "spec": {
            "workloadSelector": {"labels": dict(sorted(event.workload_selector.items()))},
            "egress": [{"hosts": egress_hosts(event, settings)}],
        },
    }


def labels(settings: WriterSettings) -> dict[str, str]:
    """The labels lazyload puts on every Sidecar it manages."""
    result = {MANAGED_BY_LABEL: MANAGED_BY}
    if settings.sidecar.revision:
        result[REVISION_LABEL] = settings.sidecar.revision
    return result


def owner_reference(event: events.FenceChanged) -> RawObject:
    """The ServiceFence as controller owner: deleting the fence garbage-collects the Sidecar."""
    return {
        "apiVersion": FENCE_API_VERSION,
        "kind": FENCE_KIND,
        "name": event.name,
        "uid": event.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def egress_hosts(event: events.FenceChanged, settings: WriterSettings) -> list[str]:
    """Sorted unique egress hosts: mesh namespaces (and, in namespace mode, the fence
    namespace's own global-sidecar), extra hosts, then the fence's domains."""
    mesh = settings.mesh
    found = {f"{mesh.istio_namespace}/*", f"{mesh.global_sidecar_namespace}/*"}
    if mesh.global_sidecar_service:
        name = mesh.global_sidecar_service
        found.add(f"*/{name}.{event.namespace}.svc.{mesh.cluster_domain}")
    found.update(extra_host(h) for h in settings.sidecar.extra_hosts)
    found.update(fence_host(d, settings) for d in event.hosts)
    if settings.sidecar.short_domain:
        shorts = (short_host(d, event.namespace, settings) for d in event.hosts)
        found.update(h for h in shorts if h is not None)
    return sorted(found)


def short_host(domain: str, namespace: str, settings: WriterSettings) -> str | None:
    """The short name of a Service of `namespace` as an egress host (Slime's enableShortDomain:
    `*/details`; `<ns>/details` in own-namespace mode), None for any other domain."""
    if service_namespace(domain, settings.mesh.cluster_domain) != namespace:
        return None
    name = domain.split(".", 1)[0]
    return f"{namespace}/{name}" if settings.sidecar.host_mode == "own-namespace" else f"*/{name}"


def extra_host(value: str) -> str:
    """A configured extra host: `ns/*` and `ns/host` as they are, a bare FQDN as `*/<fqdn>`."""
    return value if "/" in value else f"*/{value}"


def fence_host(domain: str, settings: WriterSettings) -> str:
    """One fence domain as an egress host: `ns/*` as is, an FQDN per `sidecar.host_mode`."""
    if domain.endswith("/*"):
        return domain
    if settings.sidecar.host_mode == "own-namespace":
        namespace = service_namespace(domain, settings.mesh.cluster_domain)
        if namespace:
            return f"{namespace}/{domain}"
    return f"*/{domain}"


def service_namespace(fqdn: str, cluster_domain: str) -> str | None:
    """The namespace of `<svc>.<ns>.svc.<cluster_domain>`, or None for any other host."""
    suffix = f".svc.{cluster_domain}"
    if not fqdn.endswith(suffix):
        return None
    parts = fqdn[: -len(suffix)].split(".")
    return parts[1] if len(parts) == 2 and all(parts) else None


def fence_revision(sidecar: RawObject) -> int | None:
    """The fence revision a stored Sidecar carries, or None when it has none (or junk)."""
    value = (sidecar.get("metadata", {}).get("annotations") or {}).get(FENCE_REVISION_ANNOTATION)
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def is_managed(sidecar: RawObject) -> bool:
    """True when lazyload owns this Sidecar (and may replace or delete it)."""
    return (sidecar.get("metadata", {}).get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY
