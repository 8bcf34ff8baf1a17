"""What a fence domain expands to: VirtualService destinations, aliases, label-selector hosts.

Pure values built from the watch caches (`watching.Cluster.mesh()`) and read by `desiring`:

- `routes_from_virtual_services`: VirtualService host -> every destination of its `http`, `tcp`
  and `tls` routes (and http mirrors), a root's `delegate` VirtualServices included. Short names
  (no dot) are completed with the namespace of the VirtualService that names them, as Istio does;
  VirtualServices bound only to gateways (no `mesh` in `gateways`) do not apply to sidecars and are
  skipped. Expansion is one level: a destination's own VirtualService does not apply to traffic
  already routed to it.
- `Alias`: Slime's `domainAliases` rule (a regex with named groups; `$name`/`${name}` templates),
  applied when the pattern matches the host exactly once.
- `Mesh.selector_hosts`: Services of any namespace matching one of the fence's label selectors.

Nothing here does I/O.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lazyload_common import hosts

_GO_NAMED_GROUP = re.compile(r"\(\?<(?![=!])")
_TEMPLATE_VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


@dataclass(frozen=True)
class Alias:
    """One `domainAliases` rule, compiled."""

    pattern: re.Pattern[str]
    templates: tuple[str, ...]

    @classmethod
    def compile(cls, pattern: str, templates: Sequence[str]) -> Alias:
        """Compile Slime's Go RE2 pattern (`(?P<n>` and `(?<n>` groups); ValueError if bad."""
        if not templates:
            raise ValueError(f"alias {pattern!r}: no templates")
        try:
            compiled = re.compile(_GO_NAMED_GROUP.sub("(?P<", pattern))
        except re.error as e:
            raise ValueError(f"alias {pattern!r}: {e}") from e
        return cls(compiled, tuple(templates))

    def expand(self, host: str) -> list[str]:
        """One host per template when the pattern matches `host` exactly once (Slime)."""
        matches = list(self.pattern.finditer(host))
        if len(matches) != 1:
            return []
        groups = {k: v or "" for k, v in matches[0].groupdict().items()}
        out = []
        for template in self.templates:
            alias = _TEMPLATE_VAR.sub(lambda m: groups.get(m.group(1) or m.group(2), ""), template)
            if hosts.is_valid_host(alias) and alias != host:
                out.append(alias)
        return out


@dataclass(frozen=True)
class Mesh:
    """What the cluster contributes to fences besides the fence itself."""

    cluster_domain: str = "cluster.local"
    routes: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """VirtualService host (FQDN, or `*.suffix`) -> destination hosts."""
    services: Sequence[tuple[str, Mapping[str, str]]] = ()
    """(FQDN, labels) of every Service."""
    aliases: Sequence[Alias] = ()
    stable_hosts: Sequence[str] = ()
    """Domains every fence holds (Slime's `stableHost`)."""

    def destinations(self, host: str) -> set[str]:
        """Destinations of every VirtualService for `host` (exact and `*.` wildcard hosts)."""
        out = set(self.routes.get(host, ()))
        for suffix, dests in self._wildcards:
            if host.endswith(suffix):
                out |= dests
        out.discard(host)
        return out

    @functools.cached_property
    def _wildcards(self) -> list[tuple[str, frozenset[str]]]:
        return [(h[1:], d) for h, d in self.routes.items() if h.startswith("*.")]

    def namespace_destinations(self, namespace: str) -> set[str]:
        """For `ns/*`: destinations of the VirtualServices of `ns`'s services that live elsewhere."""
        suffix = f".{namespace}.svc.{self.cluster_domain}"
        out: set[str] = set()
        for vs_host, dests in self.routes.items():
            if vs_host.endswith(suffix) and vs_host.count(".") == suffix.count("."):
                out |= {d for d in dests if not d.endswith(suffix)}
        return out

    def aliases_of(self, host: str) -> list[str]:
        return [a for rule in self.aliases for a in rule.expand(host)]

    def selector_hosts(self, selectors: Iterable[Mapping[str, str]]) -> set[str]:
        """Services whose labels contain every pair of at least one selector (empty: none)."""
        wanted = [s for s in selectors if s]
        if not wanted:
            return set()
        return {
            fqdn
            for fqdn, labels in self.services
            if any(all(labels.get(k) == v for k, v in s.items()) for s in wanted)
        }


def stable_domain(entry: str) -> str | None:
    """Slime's `stableHost` entry (`ns/*`, `*/host` or `host`) as a fence domain; None if invalid."""
    entry = entry.strip().lower()
    domain = entry[2:] if entry.startswith("*/") else entry
    return domain if hosts.is_valid_domain(domain) else None


def complete(host: str, namespace: str, cluster_domain: str) -> str:
    """Istio's short-name rule: a name without a dot is a Service of `namespace`."""
    host = host.strip().lower()
    if host and "." not in host and host != "*" and not hosts.is_ip_literal(host):
        return hosts.service_fqdn(host, namespace, cluster_domain)
    return host


def routes_from_virtual_services(
    objs: Iterable[Mapping[str, Any]], cluster_domain: str
) -> dict[str, frozenset[str]]:
    """VirtualService host -> destination hosts, delegates resolved."""
    by_name = {_key(o): o for o in objs}
    out: dict[str, set[str]] = {}
    for obj in by_name.values():
        spec = obj.get("spec") or {}
        namespace = _key(obj)[0]
        gateways = spec.get("gateways") or []
        if gateways and "mesh" not in gateways:
            continue
        dests = _destinations(spec, namespace, cluster_domain)
        for route in _list(spec.get("http")):
            delegate = route.get("delegate")
            if isinstance(delegate, Mapping) and delegate.get("name"):
                ref = (str(delegate.get("namespace") or namespace), str(delegate["name"]))
                child = by_name.get(ref)
                if child is not None:
                    dests |= _destinations(child.get("spec") or {}, ref[0], cluster_domain)
        for raw_host in _list_of_str(spec.get("hosts")):
            host = complete(raw_host, namespace, cluster_domain)
            if host != "*":
                out.setdefault(host, set()).update(d for d in dests if d != host)
    return {h: frozenset(d) for h, d in out.items() if d}


def _destinations(spec: Mapping[str, Any], namespace: str, cluster_domain: str) -> set[str]:
    found: list[Any] = []
    for kind in ("http", "tcp", "tls"):
        for route in _list(spec.get(kind)):
            found += [r.get("destination") for r in _list(route.get("route"))]
            if kind == "http":
                found.append(route.get("mirror"))
                found += [m.get("destination") for m in _list(route.get("mirrors"))]
    out = set()
    for dest in found:
        if isinstance(dest, Mapping) and isinstance(dest.get("host"), str):
            host = complete(dest["host"], namespace, cluster_domain)
            if hosts.is_valid_host(host):
                out.add(host)
    return out


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace", "")), str(meta.get("name", "")))


def _list(value: Any) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _list_of_str(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []
