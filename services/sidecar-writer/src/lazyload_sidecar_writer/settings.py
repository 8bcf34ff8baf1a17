"""Settings of sidecar-writer: the shared groups plus `sidecar` (`LAZYLOAD_SIDECAR__*`).

`WriterSettings.check()` runs at start-up, before any connection is opened, and raises one
`ConfigError` naming every bad field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from lazyload_common import errors, hosts
from lazyload_common.settings import NatsServiceSettings
from pydantic import BaseModel, Field, field_validator
from pydantic_settings import NoDecode

SERVICE = "sidecar-writer"
SYSTEM_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")
"""Kubernetes' own namespaces: no Sidecar of lazyload's by default (`deny_namespaces`)."""
ApiVersion = Literal["v1", "v1beta1", "v1alpha3"]
HostMode = Literal["any-namespace", "own-namespace"]
SinkKind = Literal["kube", "gitops"]


class SidecarSettings(BaseModel):
    """How Sidecars are rendered and written (`LAZYLOAD_SIDECAR__*`)."""

    api_version: ApiVersion = Field(
        default="v1",
        description="Version of networking.istio.io used to write and read Sidecars. v1 needs "
        "Istio >= 1.22; v1beta1 or v1alpha3 for older control planes (Slime writes v1alpha3).",
    )
    host_mode: HostMode = Field(
        default="any-namespace",
        description="How a fence FQDN becomes an egress host: `any-namespace` -> `*/<fqdn>` "
        "(Slime's form); `own-namespace` -> `<namespace of the Service>/<fqdn>` for "
        "`<svc>.<ns>.svc.<cluster domain>` hosts (other hosts keep `*/<fqdn>`).",
    )
    short_domain: bool = Field(
        default=False,
        description="Slime's enableShortDomain: a learned Service of the fence's own namespace is "
        "also listed by its short name (`*/details` beside `*/details.<ns>.svc.<domain>`), for "
        "ServiceEntries and proxies that know it by that name.",
    )
    extra_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts added to every Sidecar (Slime's `stableHost`): `ns/*` and `ns/host` "
        "as they are, a bare FQDN as `*/<fqdn>`. JSON list or comma-separated in the environment.",
    )
    revision: str = Field(
        default="",
        description="Istio revision: when set, every Sidecar carries the label `istio.io/rev`.",
    )
    max_concurrency: int = Field(
        default=16, ge=1, le=256, description="Fences of one batch applied at the same time."
    )
    written_cache: int = Field(
        default=10_000,
        ge=0,
        description="Sidecars this replica wrote, remembered (least recently used out) so the "
        "next write of the same fence needs no GET first; a 409 or 404 falls back to a fresh "
        "read. 0 = always read before writing.",
    )
    coalesce_window: float = Field(
        default=0.1,
        ge=0,
        le=10,
        description="Seconds: a fence written less than this long ago is not written again at "
        "once; its event is redelivered when the window ends, so a burst gives few writes. "
        "0 turns coalescing off.",
    )
    retry_attempts: int = Field(
        default=6,
        ge=1,
        le=50,
        description="API attempts per fence (409/429/5xx/network) before a nak.",
    )
    retry_initial: float = Field(
        default=0.05, gt=0, description="Seconds before the first in-process retry (then doubling)."
    )
    retry_max: float = Field(
        default=2.0, gt=0, description="Longest wait between two retries, seconds."
    )
    redelivery_delay: float = Field(
        default=5.0,
        gt=0,
        description="Seconds before JetStream redelivers a fence whose retries ran out.",
    )
    probe_interval: float = Field(
        default=10.0, gt=0, description="Seconds between two API reachability probes (for /readyz)."
    )
    repair_interval: float = Field(
        default=300.0,
        ge=0,
        description="Seconds between two drift repairs (restore hand-edited or deleted managed "
        "Sidecars from the last fence event of each fence; delete those of disabled or deleted "
        "fences). 0 turns repair off.",
    )
    fence_status: bool = Field(
        default=True,
        description="Report on each ServiceFence: a `SidecarReady` condition in its status "
        "(written only when it changes) and a Warning Event `SidecarConflict` when a Sidecar "
        "lazyload does not manage holds the name. Needs RBAC: servicefences get, "
        "servicefences/status patch, events create. Ignored by the gitops sink.",
    )
    max_tracked_fences: int = Field(
        default=10000,
        ge=16,
        description="Bound of each per-fence in-memory map (last write, newest processed "
        "revision, last reported condition); the least recently used fence is forgotten first.",
    )
    sink: SinkKind = Field(
        default="kube",
        description="Where Sidecars go: `kube` = the API server; `gitops` = one YAML file per "
        "Sidecar under `gitops_dir` (no API calls at all).",
    )
    gitops_dir: Path | None = Field(
        default=None, description="Directory of the GitOps sink (`<namespace>/<name>.yaml`)."
    )
    allow_namespaces: list[str] = Field(
        default_factory=list,
        description="Only fences of these namespaces get a Sidecar; empty = every namespace "
        "not denied. A fence event of another namespace is refused (dead-lettered, counted).",
    )
    deny_namespaces: list[str] = Field(
        default=list(SYSTEM_NAMESPACES),
        description="Namespaces where lazyload never writes or deletes a Sidecar (wins over "
        "allow); a fence event there is refused (dead-lettered, counted). JSON list; the "
        "default is Kubernetes' own namespaces.",
    )

    max_deliver: int = Field(
        default=120,
        ge=1,
        description="Deliveries of one fence event at most (the consumer's JetStream "
        "max_deliver): one still failing after them is dead-lettered with its last reason, not "
        "retried for ever. 120 x the 5 s redelivery delay: about 10 minutes of an API outage.",
    )

    def manages(self, namespace: str) -> bool:
        """True when lazyload may write Sidecars in `namespace`."""
        if namespace in self.deny_namespaces:
            return False
        return not self.allow_namespaces or namespace in self.allow_namespaces

    @field_validator("extra_hosts", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [v.strip() for v in text.split(",") if v.strip()]
        return value


class WriterSettings(NatsServiceSettings):
    """Everything sidecar-writer reads from the environment."""

    sidecar: SidecarSettings = Field(default_factory=SidecarSettings)

    def check(self) -> None:
        """Raise `ConfigError` naming every field that cannot work."""
        problems = [f"sidecar.extra_hosts: {p}" for p in extra_host_problems(self.sidecar)]
        for field_name in ("istio_namespace", "global_sidecar_namespace"):
            value = getattr(self.mesh, field_name)
            if not hosts.is_valid_namespace(value):
                problems.append(f"mesh.{field_name}: not a namespace name: {value!r}")
        if self.sidecar.sink == "gitops" and self.sidecar.gitops_dir is None:
            problems.append("sidecar.gitops_dir: required when sidecar.sink is gitops")
        if self.sidecar.retry_max < self.sidecar.retry_initial:
            problems.append("sidecar.retry_max: smaller than sidecar.retry_initial")
        for field_name in ("allow_namespaces", "deny_namespaces"):
            problems += [
                f"sidecar.{field_name}: not a namespace name: {ns!r}"
                for ns in getattr(self.sidecar, field_name)
                if not hosts.is_valid_namespace(ns)
            ]
        problems += [
            f"sidecar.allow_namespaces and sidecar.deny_namespaces both name {ns!r}"
            for ns in sorted(set(self.sidecar.allow_namespaces) & set(self.sidecar.deny_namespaces))
        ]
        if problems:
            raise errors.ConfigError("; ".join(problems))


def extra_host_problems(sidecar: SidecarSettings) -> list[str]:
    """What is wrong with each configured extra host (empty when all are usable)."""
    return [f"invalid host {value!r}" for value in sidecar.extra_hosts if not _usable_extra(value)]


def _usable_extra(value: str) -> bool:
    namespace, sep, host = value.partition("/")
    if not sep:
        return hosts.is_valid_host(value)
    if namespace == "*" and host == "*":
        return False  # the whole mesh: a lazyload Sidecar that scopes nothing
    namespace_ok = namespace == "*" or hosts.is_valid_namespace(namespace)
    return namespace_ok and (host == "*" or hosts.is_valid_host(host))
