"""Who gets a fence: namespace scope, the `slime.io/serviceFenced` labels, and auto-creation.

Pure decisions on plain values. Slime's precedence: the Service's `slime.io/serviceFenced`
("true"/"false") wins over the Namespace's, which wins over the global `default_fence`. A fence is
created on the first dependency of a Service that is fenced, in scope, and has a selector (Slime
PR #168: a Service without one would give a Sidecar for the whole namespace); it is created at once,
without waiting for traffic, when a label says "true" explicitly or `eager` is on (Slime's
autoFence). A workload caller (Slime's fenceLabelKeyAlias) needs no Service, only a labelled pod.
A manual fence that a user deleted is not recreated. An auto-created fence is kept only while its
Service (for a workload fence: a labelled pod) exists and stays fenced and in scope; manual fences
are never deleted (`drop`).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

FENCED_LABEL = "slime.io/serviceFenced"
MANAGED_BY = "app.kubernetes.io/managed-by"
GLOBAL_PILOT = "lazyload-global-pilot"  # the label value of the Services global-pilot applies


class Outcome(enum.StrEnum):
    CREATE = "create"
    IGNORE = "ignore"
    """Never fence this caller now: ack its edges and count them."""
    WAIT = "wait"
    """The Service is not known (yet): retry later, dead-letter after a few attempts."""


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    reason: str = ""


@dataclass(frozen=True)
class Scope:
    """The fence settings the decisions need."""

    auto_create: bool = True
    default_fence: bool = True
    eager: bool = False
    allow_namespaces: Sequence[str] = ()
    deny_namespaces: Sequence[str] = ()
    management_selectors: Sequence[LabelSelector] = ()
    """Slime's managementSelectors: when any, a namespace must match one (ORed)."""


@dataclass(frozen=True)
class Requirement:
    """One `matchExpressions` entry of a Kubernetes label selector."""

    key: str
    operator: str
    """In, NotIn, Exists or DoesNotExist."""
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "In":
            return present and labels[self.key] in self.values
        if self.operator == "NotIn":
            return not present or labels[self.key] not in self.values
        if self.operator == "Exists":
            return present
        return not present  # DoesNotExist


@dataclass(frozen=True)
class LabelSelector:
    """A Kubernetes label selector: every `matchLabels` pair and every requirement must hold (an
    empty selector matches everything)."""

    match_labels: Mapping[str, str] = field(default_factory=dict)
    match_expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels.items()) and all(
            r.matches(labels) for r in self.match_expressions
        )


@dataclass(frozen=True)
class ServiceFacts:
    """What the decision needs to know of a Service."""

    labels: Mapping[str, str]
    selector: Mapping[str, str]
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkloadIdentity:
    """Workload fences (Slime's `fenceLabelKeyAlias`): the pod label `key` names the workload; its
    fence is `<alias>-<value>.workload.identity`, selecting the pods with `key: value`."""

    key: str
    alias: str = "app"

    SUFFIX = ".workload.identity"

    def fence_name(self, value: str) -> str:
        return f"{self.alias}-{value}{self.SUFFIX}"

    def value_of(self, fence_name: str) -> str | None:
        """The label value a workload fence name stands for; None for other names."""
        prefix = f"{self.alias}-"
        if fence_name.startswith(prefix) and fence_name.endswith(self.SUFFIX):
            return fence_name[len(prefix) : -len(self.SUFFIX)] or None
        return None

    def valid(self) -> bool:
        name = self.key.rpartition("/")[2]
        return bool(_LABEL_NAME.match(name)) and bool(_LABEL_NAME.match(self.alias))


_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?\Z")


def label_verdict(labels: Mapping[str, str] | None) -> bool | None:
    """`slime.io/serviceFenced`: "true" -> True, "false" -> False, anything else -> None."""
    value = (labels or {}).get(FENCED_LABEL, "").strip().lower()
    return {"true": True, "false": False}.get(value)


def is_fenced(
    service_labels: Mapping[str, str] | None,
    namespace_labels: Mapping[str, str] | None,
    *,
    default: bool,
) -> bool:
    """Service label, else Namespace label, else `default`."""
    for verdict in (label_verdict(service_labels), label_verdict(namespace_labels)):
        if verdict is not None:
            return verdict
    return default


def namespace_in_scope(
    namespace: str, scope: Scope, namespace_labels: Mapping[str, str] | None = None
) -> bool:
    """Deny wins; an empty allow list allows every namespace; with management selectors the
    namespace's labels must also match one of them (labels not known yet match none)."""
    if namespace in scope.deny_namespaces:
        return False
    if scope.allow_namespaces and namespace not in scope.allow_namespaces:
        return False
    if scope.management_selectors:
        labels = namespace_labels or {}
        return any(selector.matches(labels) for selector in scope.management_selectors)
    return True


def creation(
    namespace: str,
    *,
    service: ServiceFacts | None,
    namespace_labels: Mapping[str, str] | None,
    scope: Scope,
    tombstoned: bool = False,
    workload_pods: int | None = None,
) -> Verdict:
    """Whether to create the missing fence of a caller that sent a dependency: a Service's, or,
    with `workload_pods` (the labelled pods of a workload caller, Slime's fenceLabelKeyAlias),
    a workload's, which needs no Service but one pod at least."""
    if not scope.auto_create:
        return Verdict(Outcome.IGNORE, "auto-create is off")
    if not namespace_in_scope(namespace, scope, namespace_labels):
        return Verdict(Outcome.IGNORE, f"namespace {namespace} is out of scope")
    if tombstoned:
        return Verdict(Outcome.IGNORE, "a manual fence of this name was deleted")
    if workload_pods is not None:
        if workload_pods == 0:
            return Verdict(Outcome.WAIT, "service not found (no labelled pod either)")
        return Verdict(Outcome.CREATE)
    if service is None:
        return Verdict(Outcome.WAIT, "service not found")
    if not service.selector:
        return Verdict(Outcome.IGNORE, "service has no selector")
    if service.labels.get(MANAGED_BY) == GLOBAL_PILOT:
        # a global-sidecar (namespace mode puts one in each fenced namespace) keeps the whole
        # mesh: a narrow Sidecar on its proxy would break every first call it forwards
        return Verdict(Outcome.IGNORE, "the global-sidecar's own Service")
    if not is_fenced(service.labels, namespace_labels, default=scope.default_fence):
        return Verdict(Outcome.IGNORE, f"not fenced ({FENCED_LABEL})")
    return Verdict(Outcome.CREATE)


def eager(
    namespace: str,
    *,
    service: ServiceFacts | None,
    namespace_labels: Mapping[str, str] | None,
    scope: Scope,
    tombstoned: bool = False,
) -> bool:
    """Whether to create the fence of a Service now, before any traffic."""
    verdict = creation(
        namespace,
        service=service,
        namespace_labels=namespace_labels,
        scope=scope,
        tombstoned=tombstoned,
    )
    if verdict.outcome is not Outcome.CREATE or service is None:
        return False
    explicit = label_verdict(service.labels)
    if explicit is None:
        explicit = label_verdict(namespace_labels)
    return bool(explicit) or scope.eager


def keep(
    namespace: str,
    *,
    service: ServiceFacts | None,
    namespace_labels: Mapping[str, str] | None,
    scope: Scope,
) -> bool:
    """Whether an auto-created fence should still exist."""
    if service is None or not service.selector:
        return False
    if not namespace_in_scope(namespace, scope, namespace_labels):
        return False
    return is_fenced(service.labels, namespace_labels, default=scope.default_fence)


def drop(
    namespace: str,
    *,
    auto_created: bool,
    service: ServiceFacts | None,
    namespace_labels: Mapping[str, str] | None,
    scope: Scope,
    workload_pods: int | None = None,
) -> bool:
    """Whether to delete a fence: only an auto-created one, when its Service is gone, not fenced
    or out of scope (Slime); a workload fence without a Service (`workload_pods` given) when its
    last labelled pod is gone or its namespace left the scope."""
    if not auto_created:
        return False
    if workload_pods is not None and service is None:
        return not workload_pods or not namespace_in_scope(namespace, scope, namespace_labels)
    return not keep(namespace, service=service, namespace_labels=namespace_labels, scope=scope)
