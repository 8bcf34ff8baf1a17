"""Settings of fence-reconciler: the shared groups plus `fence` (env `LAZYLOAD_FENCE__*`).

`check()` runs at start-up, before any connection is opened, and raises one `ConfigError` that
names every bad field.
"""

from __future__ import annotations

from typing import Literal

from lazyload_common import errors, settings
from pydantic import BaseModel, ConfigDict, Field, model_validator

from lazyload_fence_reconciler import admitting, desiring, expanding, policies

SERVICE = "fence-reconciler"


class DomainAlias(BaseModel):
    """Slime's `domainAliases[]`: a regex with named groups and `$group` templates."""

    pattern: str = Field(min_length=1)
    templates: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _compiles(self) -> DomainAlias:
        self.compiled()
        return self

    def compiled(self) -> expanding.Alias:
        return expanding.Alias.compile(self.pattern, self.templates)


class SelectorRequirement(BaseModel):
    """A `matchExpressions` entry (Kubernetes LabelSelectorRequirement)."""

    model_config = ConfigDict(extra="forbid")

    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _values_fit_the_operator(self) -> SelectorRequirement:
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"{self.operator} needs values")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"{self.operator} takes no values")
        return self


class NamespaceSelector(BaseModel):
    """A Kubernetes LabelSelector over Namespace labels (`matchLabels`, `matchExpressions`)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    match_labels: dict[str, str] = Field(default_factory=dict, alias="matchLabels")
    match_expressions: list[SelectorRequirement] = Field(
        default_factory=list, alias="matchExpressions"
    )

    def to_policy(self) -> policies.LabelSelector:
        return policies.LabelSelector(
            match_labels=dict(self.match_labels),
            match_expressions=tuple(
                policies.Requirement(r.key, r.operator, tuple(r.values))
                for r in self.match_expressions
            ),
        )


NEVER_FENCED = ("kube-system", "kube-public", "kube-node-lease")
"""Kubernetes' own namespaces: never fenced (with istiod's and lazyload's, `scoped_fence`)."""


class FenceSettings(BaseModel):
    """How fences are created, learned into and recycled."""

    auto_create: bool = Field(
        default=True, description="Create the ServiceFence of a caller on its first dependency."
    )
    default_fence: bool = Field(
        default=True,
        description="Fence a Service when neither it nor its Namespace has slime.io/serviceFenced "
        "(Slime's defaultFence; lazyload fences on traffic, so true by default).",
    )
    eager: bool = Field(
        default=True,
        description="Create the fence (and so the base Sidecar) of every Service auto-fence "
        "selects as soon as the Service exists, before any traffic (Slime's autoFence), paced by "
        "kube.qps. false = only on its first dependency, which works only where every workload "
        "already has a narrow default Sidecar (e.g. a root-namespace Sidecar with egress "
        "`istio-system/*` and the global-sidecar's namespace): an unfenced workload holds the "
        "whole mesh, calls directly and is never seen by the global-sidecar.",
    )
    allow_namespaces: list[str] = Field(
        default_factory=list, description="Only these namespaces get fences; empty = all."
    )
    deny_namespaces: list[str] = Field(
        default_factory=list,
        description="These namespaces never get fences (wins over allow); Kubernetes' own, "
        "istiod's (mesh.istio_namespace) and lazyload's (mesh.global_sidecar_namespace) never "
        "do either.",
    )
    resync_interval: float = Field(
        default=300.0,
        ge=0,
        description="Seconds between full recomputations of every fence (recycling, missed "
        "events); 0 = only at start-up.",
    )
    recycle_after: float = Field(
        default=0.0,
        ge=0,
        description="Seconds without traffic after which a learned host goes EXPIREWAIT; 0 = "
        "never (Slime's accesslog behaviour).",
    )
    liveness_source: Literal["none", "sidecar-als"] = Field(
        default="none",
        description="What shows that a learned dependency is still used once calls go direct "
        "(the global-sidecar no longer sees them): sidecar-als = every sidecar's access log "
        "reaches accesslog-ingest (Istio Telemetry with an envoyHttpAls/envoyTcpAls provider; "
        "the chart's sidecarAccessLogs), which re-publishes each live edge every "
        "dedup.refresh_interval. Recycling (recycle_after) needs one: without, live "
        "dependencies would be recycled and flap.",
    )
    expire_wait: float = Field(
        default=3600.0,
        ge=0,
        description="Seconds a host stays EXPIREWAIT (still rendered) before removal.",
    )
    last_seen_granularity: float = Field(
        default=60.0,
        ge=0,
        description="Seconds lastSeen must advance before it is written again: bounds writes.",
    )
    missing_service_retries: int = Field(
        default=5,
        ge=1,
        description="Deliveries of an edge whose caller has no fence and no Service yet before "
        "it is dead-lettered.",
    )
    missing_service_delay: float = Field(
        default=5.0,
        gt=0,
        description="Seconds before an edge waiting for its Service is redelivered.",
    )
    conflict_retries: int = Field(
        default=5,
        ge=1,
        description="Re-reads and re-applies of a fence write after a 409 conflict.",
    )
    domain_aliases: list[DomainAlias] = Field(
        default_factory=list,
        description="Slime's domainAliases: JSON list of {pattern, templates}; a host the pattern "
        "matches exactly once also brings one host per template (reason alias).",
    )
    stable_hosts: list[str] = Field(
        default_factory=list,
        description="Slime's stableHost: JSON list of domains every fence holds (`ns/*`, "
        "`*/host` or `host`; reason stable).",
    )
    external_allow: list[str] = Field(
        default_factory=list,
        description="Globs of external hosts that may be learned without a ServiceEntry.",
    )
    dispatches: list[admitting.Dispatch] = Field(
        default_factory=list,
        description="global-pilot's routing.dispatches (same JSON): hosts dispatched anywhere but "
        "_GLOBAL_SIDECAR are never learned.",
    )
    management_selectors: list[NamespaceSelector] = Field(
        default_factory=list,
        description="Slime's managementSelectors: JSON list of Kubernetes label selectors "
        '(`{"matchLabels": {...}, "matchExpressions": [...]}`) over Namespace labels, ORed; when '
        "set, only matching namespaces get auto fences (on top of allow/deny).",
    )
    istio_rev: str = Field(
        default="",
        description="Istio revision this reconciler serves (Slime's istioRev/selfResourceRev): "
        "fences it creates carry the label istio.io/rev=<rev>, and fences of another revision "
        "are left alone.",
    )
    strict_rev: bool = Field(
        default=False,
        description="Only fences whose istio.io/rev equals istio_rev exactly are served (Slime's "
        "strictRev); otherwise a fence without the label is served too.",
    )
    workload_label_key: str = Field(
        default="",
        description="Slime's fenceLabelKeyAlias `key[:alias]`: workload callers (no Service) "
        "get the fence `<alias>-<value>.workload.identity` selecting pods with label key=value; "
        "empty = off.",
    )
    learn_unknown_services: bool = Field(
        default=False,
        description="Learn a Service FQDN (`<name>.<ns>.svc.<domain>`) that names no Service "
        "the reconciler watches (nor a ServiceEntry host). Off: such an edge is dropped and "
        "counted (`unknown-service`), so a forged or mistyped destination never widens a Sidecar.",
    )
    max_learned_hosts: int = Field(
        default=1000,
        ge=0,
        description="Most learned hosts one fence keeps; a new host past it is not learned "
        '(counted as lazyload_fence_edges_total{outcome="host-cap"}, condition HostCapReached '
        "on the fence), so a forged flood cannot grow a Sidecar without bound nor a status past "
        "the API server's object size limit. 0 = no cap.",
    )
    service_label: str = Field(
        default="app",
        description="A fence with neither workloadSelector.labels nor fromService selects the "
        "pods labelled `<this>: <fence name>` (Slime's global.service fallback); empty = such a "
        "fence gets no Sidecar.",
    )
    tombstone_config_map: str = Field(
        default="lazyload-fence-tombstones",
        pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$",
        description="The ConfigMap in mesh.global_sidecar_namespace (lazyload's namespace) that "
        "keeps the tombstones of deleted manual fences (created by the reconciler; the chart "
        "grants write to that one name only), so a deleted manual fence stays deleted across "
        "restarts and replicas.",
    )
    batch: int = Field(default=256, ge=1, description="Dependency messages fetched per batch.")
    coalesce_window: float = Field(
        default=0.05,
        ge=0,
        le=5,
        description="Seconds a batch keeps collecting after its first edge, so a burst for one "
        "fence costs one write (0 = handle each fetch at once).",
    )
    max_batch: int = Field(
        default=4096, ge=1, description="Most dependency messages handled at once."
    )
    concurrency: int = Field(default=16, ge=1, description="Fences written in parallel.")
    pipeline: int = Field(
        default=8,
        ge=1,
        le=64,
        description="Batches in hand at once: while fences wait for a write slot, edges of later "
        "batches join their fence's next write (at most pipeline x max_batch messages unacked).",
    )

    max_deliver: int = Field(
        default=600,
        ge=1,
        description="Deliveries of one dependency message at most (the consumer's JetStream "
        "max_deliver): one still failing after them is dead-lettered with its last reason, not "
        "retried for ever (about 10 minutes of an API outage at the 1-2 s retry delays).",
    )

    def policy(self) -> desiring.Policy:
        return desiring.Policy(
            recycle_after=self.recycle_after,
            expire_wait=self.expire_wait,
            last_seen_granularity=self.last_seen_granularity,
            service_label=self.service_label,
            max_learned_hosts=self.max_learned_hosts,
        )

    def gate(self) -> admitting.Gate:
        return admitting.Gate(
            external_allow=tuple(self.external_allow),
            dispatches=tuple(self.dispatches),
            learn_unknown_services=self.learn_unknown_services,
        )

    def stable_domains(self) -> tuple[str, ...]:
        return tuple(d for h in self.stable_hosts if (d := expanding.stable_domain(h)))

    def aliases(self) -> tuple[expanding.Alias, ...]:
        return tuple(a.compiled() for a in self.domain_aliases)

    def workload_identity(self) -> policies.WorkloadIdentity | None:
        """Slime's `fenceLabelKeyAlias` `key[:alias]` (alias defaults to `app`); None when off."""
        if not self.workload_label_key.strip():
            return None
        key, _, alias = self.workload_label_key.strip().partition(":")
        return policies.WorkloadIdentity(key=key, alias=alias or "app")

    def scope(self) -> policies.Scope:
        return policies.Scope(
            auto_create=self.auto_create,
            default_fence=self.default_fence,
            eager=self.eager,
            allow_namespaces=tuple(self.allow_namespaces),
            deny_namespaces=tuple(self.deny_namespaces),
            management_selectors=tuple(s.to_policy() for s in self.management_selectors),
        )


class ReconcilerSettings(settings.NatsServiceSettings):
    """Everything fence-reconciler reads from the environment (prefix `LAZYLOAD_`)."""

    fence: FenceSettings = Field(default_factory=FenceSettings)

    def scoped_fence(self) -> FenceSettings:
        """The fence settings the reconciler runs with: `deny_namespaces` plus the namespaces
        that never get a fence - Kubernetes' own, istiod's and lazyload's (its global-sidecar
        must keep the whole mesh: a narrow Sidecar on it would break every first call)."""
        never = (*NEVER_FENCED, self.mesh.istio_namespace, self.mesh.global_sidecar_namespace)
        deny = list(dict.fromkeys([*self.fence.deny_namespaces, *never]))
        return self.fence.model_copy(update={"deny_namespaces": deny})

    def check(self) -> None:
        """Raise `ConfigError` naming every field that cannot work."""
        problems = [
            f"fence.allow_namespaces and fence.deny_namespaces both name {ns!r}"
            for ns in sorted(set(self.fence.allow_namespaces) & set(self.fence.deny_namespaces))
        ]
        if 0 < self.fence.resync_interval < 1:
            problems.append("fence.resync_interval must be 0 or at least 1 second")
        if self.fence.recycle_after and self.fence.liveness_source == "none":
            problems.append(
                "fence.recycle_after needs a liveness source (fence.liveness_source=sidecar-als, "
                "with every sidecar's access log sent to accesslog-ingest): the global-sidecar "
                "stops seeing a dependency once it is in the Sidecar, so live ones would be "
                "recycled"
            )
        problems += [
            f"fence.stable_hosts: not a host or ns/*: {h!r}"
            for h in self.fence.stable_hosts
            if expanding.stable_domain(h) is None
        ]
        if self.fence.missing_service_retries > self.fence.max_deliver:
            problems.append("fence.missing_service_retries: more than fence.max_deliver deliveries")
        identity = self.fence.workload_identity()
        if identity is not None and not identity.valid():
            problems.append(
                f"fence.workload_label_key: bad key[:alias] {self.fence.workload_label_key!r}"
            )
        if problems:
            raise errors.ConfigError("; ".join(problems))
