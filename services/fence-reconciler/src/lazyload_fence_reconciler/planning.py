"""What the reconcile cycle does with one fence name: pure decisions over plain values.

`reconciling` gathers what the watch caches know about a name (`Facts`: its Service, its
Namespace's labels, a tombstone, the labelled pods of a workload) and asks here: create the
missing fence of a caller (`creation`) or of a Service before any traffic (`eager`), delete an
auto-created fence (`drop`), which copy of a fence is the newest (`newest`), which fences a
Service change concerns (`selector_fences`), which published fences vanished while nobody
watched (`vanished`), and when auto-fence progress is worth a log line (`progress_due`). The
rules themselves (labels, scope, tombstones) are `policies`'; `desiring` computes a fence's
status, `changes` its events. No I/O here; tests are plain tables.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from lazyload_common import kube

from lazyload_fence_reconciler import changes, fences, policies

Key = tuple[str, str]


@dataclass(frozen=True)
class Facts:
    """What the caches know about the surroundings of one fence name."""

    namespace: str
    service: policies.ServiceFacts | None = None
    """The Service of the fence's name; None when there is none (yet)."""
    namespace_labels: Mapping[str, str] = field(default_factory=dict)
    tombstoned: bool = False
    """A manual fence of this name was deleted: it is not created again automatically."""
    workload_pods: int | None = None
    """For a workload fence (Slime's fenceLabelKeyAlias): how many pods carry its label value;
    None for a Service's fence."""


def creation(facts: Facts, scope: policies.Scope) -> policies.Verdict:
    """Whether to create the missing fence of a caller whose dependencies arrived."""
    return policies.creation(
        facts.namespace,
        service=facts.service,
        namespace_labels=facts.namespace_labels,
        scope=scope,
        tombstoned=facts.tombstoned,
        workload_pods=facts.workload_pods,
    )


def eager(facts: Facts, scope: policies.Scope) -> bool:
    """Whether to create the missing fence of a Service now, before any traffic (auto-fence;
    never for a workload: its fence waits for its first dependency)."""
    return policies.eager(
        facts.namespace,
        service=facts.service,
        namespace_labels=facts.namespace_labels,
        scope=scope,
        tombstoned=facts.tombstoned,
    )


def drop(fence: fences.Fence, facts: Facts, scope: policies.Scope) -> bool:
    """Whether to delete `fence` (only an auto-created one: `policies.drop`)."""
    return policies.drop(
        facts.namespace,
        auto_created=fence.created_by_controller,
        service=facts.service,
        namespace_labels=facts.namespace_labels,
        scope=scope,
        workload_pods=facts.workload_pods,
    )


def serves(obj: kube.RawObject, istio_rev: str, *, strict: bool) -> bool:
    """Whether a reconciler of Istio revision `istio_rev` owns the fence `obj`."""
    labels = obj.get("metadata", {}).get("labels") or {}
    return fences.revision_in_scope(labels, istio_rev, strict=strict)


def istio_revision(obj: kube.RawObject) -> str:
    """The Istio revision label of the fence `obj` ("" when it has none)."""
    return str((obj.get("metadata", {}).get("labels") or {}).get(fences.REVISION_LABEL, ""))


def newest(stored: kube.RawObject | None, written: kube.RawObject | None) -> kube.RawObject | None:
    """The newer of the watch store's copy of a fence and the reconciler's own last write: the
    write when it is of the same object (uid) and of a higher resourceVersion."""
    if stored is None or written is None:
        return stored or written
    if stored.get("metadata", {}).get("uid") != written.get("metadata", {}).get("uid"):
        return stored
    return written if resource_version(written) > resource_version(stored) else stored


def superseded(written: kube.RawObject, stored: kube.RawObject) -> bool:
    """Whether the store caught up with our write (one copy of the fence is enough then)."""
    return resource_version(written) <= resource_version(stored)


def resource_version(obj: kube.RawObject) -> int:
    """resourceVersion as a number where it is one (an optimisation only: 409 keeps us right)."""
    value = str(obj.get("metadata", {}).get("resourceVersion", ""))
    return int(value) if value.isdigit() else -1


def selector_fences(objs: Iterable[kube.RawObject]) -> list[Key]:
    """The fences with a `spec.labelSelector`: any Service change may add or remove hosts."""
    return [kube.object_key(obj) for obj in objs if (obj.get("spec") or {}).get("labelSelector")]


def vanished(sent: Mapping[Key, changes.Sent], present: Collection[Key]) -> list[Key]:
    """Fences published as alive that the store does not hold: deleted while nobody watched,
    their deletion still to be announced."""
    return [key for key, last in sent.items() if not last.deleted and key not in present]


def stub(key: Key, uid: str) -> kube.RawObject:
    """The least a vanished fence's deletion event is built from."""
    return {"metadata": {"namespace": key[0], "name": key[1], "uid": uid}}


def progress_due(total: int, left: int) -> bool:
    """Whether auto-fencing `total` Services with `left` to go deserves a log line (every tenth)."""
    step = max(1, total // 10)
    return left == 0 or left % step == 0
