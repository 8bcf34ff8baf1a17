"""The pure core of the reconciler: (fence, new edges, Service selector, now) -> desired fence.

`desire()` merges four sources into `status.domains`: hosts learned from traffic
(`status.learned`, and Slime's `status.metricStatus`), static hosts of `spec.host`, Services
matching `spec.labelSelector`, and the module-wide stable hosts (Slime's `stableHost`); each domain then expands (`expanding.Mesh`) with its aliases and
the destinations of its VirtualServices (Slime's `domains[key].hosts`), so expanded hosts follow
the state of the domain they come from. It returns the whole status to write, the
rendered host set with per-host reasons, and whether the desired state (hosts, enabled, workload
selector) changed, in which case `revision` is one more than the recorded one. `recorded()` reads
back the state a status already holds, for re-publishing (`changes` builds the FenceChanged
events of these states). No I/O here; tests use plain values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from lazyload_common import hosts

from lazyload_fence_reconciler import expanding, fences

LEARNED = "learned"
SPEC = "spec"
SELECTOR = "selector"
STABLE = "stable"
EXPANDED = "expanded"
ALIAS = "alias"
FROM = "from:"
"""Prefix of the reason naming the domain an expanded or alias host comes from."""
NO_MESH = expanding.Mesh()


@dataclass(frozen=True)
class Edge:
    """One learned dependency of the fence's caller: the destination host and when it was seen."""

    host: str
    port: int | None = None
    first_seen: float = 0.0
    observed_at: float = 0.0
    external: bool = False
    """Not a Service of the mesh (ingest's `external`)."""
    registered: bool = False
    """Ingest matched the external host to a ServiceEntry (`destination_namespace` is set)."""


@dataclass(frozen=True)
class Policy:
    """Knobs of the computation (from `FenceSettings`)."""

    recycle_after: float = 0.0
    """Seconds without traffic after which a learned host goes EXPIREWAIT; 0 = never recycle."""
    expire_wait: float = 3600.0
    """Seconds a host stays EXPIREWAIT (still rendered) before it is removed."""
    last_seen_granularity: float = 60.0
    """`lastSeen` only moves when it advances by this much, so repeated edges cause no writes."""
    service_label: str = "app"
    max_learned_hosts: int = 0
    """Most learned hosts one fence keeps (0 = no cap): a new host past it is refused (counted,
    the HostCapReached condition), so a fence's status never outgrows the object size limit."""
    """Label key of the fallback workload selector `{key: <fence name>}` (Slime's `global.service`)
    of a fence with neither `labels` nor `fromService`; empty = no fallback (no Sidecar)."""


@dataclass(frozen=True)
class State:
    """A desired state of a fence: what a FenceChanged event carries."""

    revision: int
    enabled: bool
    workload_selector: fences.Selector | None
    hosts: tuple[str, ...]
    reasons: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def essence(self) -> tuple[Any, ...]:
        """What a revision is about: a change of any of these is a new revision."""
        selector = tuple(sorted(self.workload_selector.items())) if self.workload_selector else None
        return (self.enabled, selector, self.hosts)


@dataclass(frozen=True)
class Desired:
    """The result of `desire()`: the status to write and the state it records."""

    state: State
    status: dict[str, Any]
    changed: bool
    """The desired state differs from the recorded one: `state.revision` was bumped."""
    write_needed: bool
    """The status differs from the current one (a change, or only bookkeeping like lastSeen)."""
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    invalid_spec_hosts: tuple[str, ...] = ()
    capped: tuple[str, ...] = ()
    """New hosts refused by the fence's learned-host cap (`Policy.max_learned_hosts`)."""
    next_change: float | None = None
    """The next instant a host's status changes with time alone (a `deadline` or `auto` spec host
    expires, a learned host goes EXPIREWAIT or is removed); None when nothing is due."""


def workload_selector(
    fence: fences.Fence, service_selector: fences.Selector | None, *, service_label: str = "app"
) -> fences.Selector | None:
    """Slime's priority: `labels` when non-empty; else, with `fromService`, the Service's selector
    (None while the Service or its selector is missing: no Sidecar yet); else
    `{<service_label>: <fence name>}` (Slime's compatibility fallback, its `global.service`)."""
    if fence.workload_labels:
        return dict(fence.workload_labels)
    if fence.from_service:
        return dict(service_selector) if service_selector else None
    return {service_label: fence.name} if service_label else None


def rendered_hosts(domains: Mapping[str, fences.Domain]) -> tuple[str, ...]:
    """The hosts a Sidecar gets from domains: `ns/*` keys and the hosts of every rendered domain."""
    out: set[str] = set()
    for key, domain in domains.items():
        if not domain.status.rendered:
            continue
        if hosts.is_namespace_domain(key):
            out.add(key)
        out.update(domain.hosts)
    return tuple(sorted(out))


def desire(
    fence: fences.Fence,
    edges: Iterable[Edge] = (),
    *,
    service_selector: fences.Selector | None,
    now: float,
    policy: Policy = Policy(),
    reset: bool = False,
    revision_floor: int = 0,
    mesh: expanding.Mesh = NO_MESH,
) -> Desired:
    """Compute the desired status of `fence` after learning `edges` (all valid hosts).

    `revision_floor` is the last revision published for a fence of this name that is gone (a
    deleted fence), so a recreated fence's revisions continue above it.
    """
    learned = {} if reset else _absorb_metric_status(fence, now)
    learned, capped = _cap(learned, _learn(learned, edges, now, policy), policy)
    learned, learned_status = _recycle(learned, now, policy)
    spec_status, invalid = _spec_domains(fence, now)
    active = fences.DomainStatus.ACTIVE
    selected = dict.fromkeys(mesh.selector_hosts(fence.label_selectors), active)
    stable = dict.fromkeys(mesh.stable_hosts, active)
    domains, reasons = _merge(
        {LEARNED: learned_status, SPEC: spec_status, SELECTOR: selected, STABLE: stable}, mesh
    )
    rendered = rendered_hosts(domains)
    state = State(
        revision=fence.revision,
        enabled=fence.enable,
        workload_selector=workload_selector(
            fence, service_selector, service_label=policy.service_label
        ),
        hosts=rendered,
        reasons={h: reasons.get(h, ()) for h in rendered},
    )
    before = recorded(fence)
    changed = fence.revision == 0 or state.essence() != before.essence()
    if changed:
        state = replace(state, revision=max(fence.revision, revision_floor) + 1)
    status = _status(
        fence,
        state,
        domains,
        learned,
        invalid,
        now,
        reset=reset,
        capped=capped,
        max_learned=policy.max_learned_hosts,
    )
    return Desired(
        state=state,
        status=status,
        changed=changed,
        write_needed=status != dict(fence.raw_status),
        added=tuple(sorted(set(state.hosts) - set(before.hosts))),
        removed=tuple(sorted(set(before.hosts) - set(state.hosts))),
        invalid_spec_hosts=invalid,
        next_change=next_change(fence, learned, now, policy),
        capped=capped,
    )


def _cap(
    before: Mapping[str, fences.Learned], after: dict[str, fences.Learned], policy: Policy
) -> tuple[dict[str, fences.Learned], tuple[str, ...]]:
    """`after` without the new hosts past `policy.max_learned_hosts` (hosts already learned are
    never dropped by the cap), and the hosts refused."""
    cap = policy.max_learned_hosts
    if cap <= 0 or len(after) <= cap:
        return after, ()
    new = sorted(h for h in after if h not in before)
    room = max(0, cap - (len(after) - len(new)))
    refused = tuple(new[room:])
    return {h: v for h, v in after.items() if h not in refused}, refused


def next_change(
    fence: fences.Fence, learned: Mapping[str, fences.Learned], now: float, policy: Policy
) -> float | None:
    """The earliest time after `now` at which recomputing `fence` gives another status."""
    times = [t for s in fence.spec_hosts.values() if (t := s.changes_at()) is not None]
    if policy.recycle_after > 0:
        for entry in learned.values():
            times.append(entry.last_seen + policy.recycle_after)
            times.append(entry.last_seen + policy.recycle_after + policy.expire_wait)
    future = [t for t in times if t >= now]
    return min(future) if future else None


def recorded(fence: fences.Fence) -> State:
    """The state the fence's status records (what was, or is to be, published at its revision)."""
    domains = fence.domains
    rendered = rendered_hosts(domains)
    learned = set(fence.learned(default_time=0.0)) | {
        h for h in map(fences.host_of_metric_key, fence.metric_status) if h
    }
    stored = fence.raw_status.get("reasons")
    stored = stored if isinstance(stored, Mapping) else {}
    reasons = {
        h: tuple(str(r) for r in stored[h])
        if isinstance(stored.get(h), list)
        else tuple(r for r, hit in ((LEARNED, h in learned), (SPEC, h in fence.spec_hosts)) if hit)
        for h in rendered
    }
    enabled = fence.recorded_enabled
    return State(
        revision=fence.revision,
        enabled=fence.enable if enabled is None else enabled,
        workload_selector=fence.recorded_selector,
        hosts=rendered,
        reasons=reasons,
    )


def _absorb_metric_status(fence: fences.Fence, now: float) -> dict[str, fences.Learned]:
    """lazyload's learned hosts plus Slime's metricStatus hosts (first seen now, if unknown)."""
    learned = fence.learned(default_time=now)
    for key in fence.metric_status:
        host = fences.host_of_metric_key(key)
        if host and host not in learned and hosts.is_valid_host(host):
            learned[host] = fences.Learned(host, first_seen=now, last_seen=now)
    return learned


def _learn(
    learned: dict[str, fences.Learned], edges: Iterable[Edge], now: float, policy: Policy
) -> dict[str, fences.Learned]:
    out = dict(learned)
    for edge in edges:
        seen = min(max(edge.observed_at, edge.first_seen), now) or now
        first = min(edge.first_seen or seen, seen)
        old = out.get(edge.host)
        if old is None:
            out[edge.host] = fences.Learned(edge.host, first, seen, edge.port)
            continue
        moved = seen - old.last_seen >= policy.last_seen_granularity
        out[edge.host] = replace(
            old,
            first_seen=min(old.first_seen, first),
            last_seen=seen if moved else old.last_seen,
            port=old.port if edge.port is None else edge.port,
            reasons=old.reasons if LEARNED in old.reasons else (*old.reasons, LEARNED),
        )
    return out


def _recycle(
    learned: dict[str, fences.Learned], now: float, policy: Policy
) -> tuple[dict[str, fences.Learned], dict[str, fences.DomainStatus]]:
    """ACTIVE -> EXPIREWAIT after `recycle_after` idle seconds -> removed `expire_wait` later."""
    kept: dict[str, fences.Learned] = {}
    status: dict[str, fences.DomainStatus] = {}
    for host, entry in learned.items():
        idle = now - entry.last_seen
        if policy.recycle_after > 0 and idle > policy.recycle_after + policy.expire_wait:
            continue
        kept[host] = entry
        expiring = policy.recycle_after > 0 and idle > policy.recycle_after
        status[host] = fences.DomainStatus.EXPIREWAIT if expiring else fences.DomainStatus.ACTIVE
    return kept, status


def _spec_domains(
    fence: fences.Fence, now: float
) -> tuple[dict[str, fences.DomainStatus], tuple[str, ...]]:
    valid: dict[str, fences.DomainStatus] = {}
    invalid: list[str] = []
    for key, strategy in fence.spec_hosts.items():
        if hosts.is_valid_domain(key):
            valid[key] = strategy.status_at(now)
        else:
            invalid.append(key)
    return valid, tuple(sorted(invalid))


def _merge(
    sources: Mapping[str, Mapping[str, fences.DomainStatus]], mesh: expanding.Mesh
) -> tuple[dict[str, fences.Domain], dict[str, tuple[str, ...]]]:
    """Merge per-source domain states (a key in several takes the most alive state), then expand
    each domain; reasons are those of the rendered domains a host is in or comes from."""
    rank = {
        fences.DomainStatus.ACTIVE: 2,
        fences.DomainStatus.EXPIREWAIT: 1,
        fences.DomainStatus.EXPIRE: 0,
    }
    states: dict[str, fences.DomainStatus] = {}
    own: dict[str, list[str]] = {}
    for name, source in sources.items():
        for key, status in source.items():
            old = states.get(key)
            if old is None or rank[status] > rank[old]:
                states[key] = status
            own.setdefault(key, []).append(name)
    domains: dict[str, fences.Domain] = {}
    reasons: dict[str, list[str]] = {}
    for key, status in states.items():
        derived = _expand(key, mesh)
        hosts_ = () if hosts.is_namespace_domain(key) else (key,)
        domains[key] = fences.Domain((*hosts_, *sorted(derived)), status)
        if not status.rendered:
            continue
        _add(reasons, key, own[key])
        for host, why in derived.items():
            _add(reasons, host, [why, FROM + key])
    ordered = {h: tuple(sorted(set(r), key=_reason_order)) for h, r in reasons.items()}
    return domains, ordered


def _expand(key: str, mesh: expanding.Mesh) -> dict[str, str]:
    """Hosts a domain adds besides itself, with why: VirtualService destinations and aliases."""
    out: dict[str, str] = {}
    if hosts.is_namespace_domain(key):
        for dest in mesh.namespace_destinations(key[:-2]):
            out[dest] = EXPANDED
            out.update(dict.fromkeys(mesh.aliases_of(dest), ALIAS))
        return out
    for alias in mesh.aliases_of(key):
        out.setdefault(alias, ALIAS)
    for dest in mesh.destinations(key):
        out.setdefault(dest, EXPANDED)
    out.pop(key, None)
    return out


def _add(reasons: dict[str, list[str]], host: str, more: Sequence[str]) -> None:
    reasons.setdefault(host, []).extend(more)


_ORDER = (LEARNED, SPEC, SELECTOR, STABLE, EXPANDED, ALIAS)


def _reason_order(reason: str) -> tuple[int, str]:
    return (_ORDER.index(reason), "") if reason in _ORDER else (len(_ORDER), reason)


def _status(
    fence: fences.Fence,
    state: State,
    domains: Mapping[str, fences.Domain],
    learned: Mapping[str, fences.Learned],
    invalid: tuple[str, ...],
    now: float,
    *,
    reset: bool,
    capped: tuple[str, ...] = (),
    max_learned: int = 0,
) -> dict[str, Any]:
    status = dict(fence.raw_status)
    status["metricStatus"] = _metric_status(fence.metric_status, learned, reset=reset)
    status["domains"] = {
        key: {"hosts": list(d.hosts), "status": d.status.value}
        for key, d in sorted(domains.items())
    }
    status["learned"] = {h: learned[h].to_raw() for h in sorted(learned)}
    status["revision"] = state.revision
    status["observedGeneration"] = fence.generation
    status["enabled"] = state.enabled
    if state.workload_selector is None:
        status.pop("workloadSelector", None)
    else:
        status["workloadSelector"] = state.workload_selector
    status["hostCount"] = len(state.hosts)
    status["reasons"] = {h: list(r) for h, r in sorted(state.reasons.items())}
    at_cap = 0 < max_learned <= len(learned)
    status["conditions"] = _conditions(fence, invalid, now, capped=capped, at_cap=at_cap)
    return status


def _metric_status(
    current: Mapping[str, str], learned: Mapping[str, fences.Learned], *, reset: bool
) -> dict[str, str]:
    """Keep keys of still-learned hosts (and keys that name no host), add new ones as "1"."""
    out: dict[str, str] = {}
    for key, value in current.items():
        host = fences.host_of_metric_key(key)
        if (host is None and not reset) or (host is not None and host in learned):
            out[key] = value
    present = {fences.host_of_metric_key(k) for k in out}
    for host in learned:
        if host not in present:
            out[fences.metric_key(host)] = "1"
    return dict(sorted(out.items()))


def _conditions(
    fence: fences.Fence,
    invalid: tuple[str, ...],
    now: float,
    *,
    capped: tuple[str, ...] = (),
    at_cap: bool = False,
) -> list[Mapping[str, Any]]:
    """SpecValid, and HostCapReached once the learned-host cap refused a host (it stays until a
    reset or recycling makes room: then False); a lastTransitionTime only moves when its status
    flips. Other conditions (sidecar-writer's SidecarReady) keep their place."""
    conditions = [c for c in fence.raw_status.get("conditions") or [] if isinstance(c, Mapping)]
    conditions = _set_condition(
        conditions,
        fence,
        now,
        "SpecValid",
        "False" if invalid else "True",
        "InvalidHosts" if invalid else "Valid",
        ("invalid spec.host keys ignored: " + ", ".join(invalid)) if invalid else "",
    )
    old = next((c for c in conditions if c.get("type") == "HostCapReached"), None)
    if capped or old is not None:
        reached = bool(capped) or (at_cap and old is not None and old.get("status") == "True")
        shown = ", ".join(capped[:5]) + (f" and {len(capped) - 5} more" if len(capped) > 5 else "")
        conditions = _set_condition(
            conditions,
            fence,
            now,
            "HostCapReached",
            "True" if reached else "False",
            "TooManyHosts" if reached else "BelowCap",
            f"new hosts not learned: {shown}" if capped else "",
            keep_message=reached and not capped,
        )
    return conditions


def _set_condition(
    conditions: list[Mapping[str, Any]],
    fence: fences.Fence,
    now: float,
    kind: str,
    status: str,
    reason: str,
    message: str,
    *,
    keep_message: bool = False,
) -> list[Mapping[str, Any]]:
    old = next((c for c in conditions if c.get("type") == kind), None)
    condition: dict[str, Any] = {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": fence.generation,
        "lastTransitionTime": fences.format_time(now),
    }
    if old is not None and old.get("status") == status:
        if old.get("lastTransitionTime"):
            condition["lastTransitionTime"] = old["lastTransitionTime"]
        if keep_message:
            condition["message"] = old.get("message", message)
    if old is None:
        return [*conditions, condition]
    return [condition if c.get("type") == kind else c for c in conditions]
