"""Which learned edges may enter a fence: dispatched hosts and unknown external hosts may not.

- `Dispatch` has the shape and meaning of global-pilot's (Slime's `dispatches`): `domains` (Envoy
  virtual-host domains: exact, `*.suffix`, `prefix.*`, `*`) or `domainRegex` (full match). A host a
  dispatch sends anywhere but `_GLOBAL_SIDECAR` never reaches the global-sidecar path, so adding it
  to a Sidecar would be wrong: it is not added. Envoy's choice is mirrored: the most specific
  domain dispatch wins, else the first regex dispatch.
- An external edge (`external=True`) is kept when ingest matched it to a ServiceEntry (it then
  carries `destination_namespace`), when its host is a ServiceEntry host we watch, or when it
  matches the allow list (globs); otherwise it is dropped and counted.

Pure; the reconciler calls `Gate.verdict` for every edge before learning it.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator

GLOBAL_SIDECAR = "_GLOBAL_SIDECAR"
DISPATCHED = "dispatched"
EXTERNAL = "external-dropped"


class Dispatch(BaseModel):
    """One dispatch rule (same JSON as global-pilot's `routing.dispatches[]`)."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)
    name: str = Field(min_length=1)
    domains: tuple[str, ...] = ()
    domain_regex: str | None = Field(None, alias="domainRegex")
    cluster: str = Field(min_length=1)

    @model_validator(mode="after")
    def _one_matcher(self) -> Dispatch:
        if bool(self.domains) == bool(self.domain_regex):
            raise ValueError(f"dispatch {self.name!r}: give either domains or domain_regex")
        if self.domain_regex is not None:
            try:
                re.compile(self.domain_regex)
            except re.error as e:
                raise ValueError(f"dispatch {self.name!r}: bad domain_regex: {e}") from e
        return self


def _specificity(domain: str, host: str) -> int | None:
    """Envoy's virtual-host order: exact > longest suffix > longest prefix > `*`; None = no match."""
    if domain == host:
        return 4_000
    if domain == "*":
        return 0
    if domain.startswith("*") and host.endswith(domain[1:]) and len(host) > len(domain) - 1:
        return 3_000 + len(domain)
    if domain.endswith("*") and host.startswith(domain[:-1]) and len(host) > len(domain) - 1:
        return 2_000 + len(domain)
    return None


def dispatch_of(host: str, dispatches: Sequence[Dispatch]) -> Dispatch | None:
    """The dispatch Envoy would pick for `host`, or None (the default route)."""
    best: tuple[int, Dispatch] | None = None
    for d in dispatches:
        for domain in d.domains:
            rank = _specificity(domain.lower(), host)
            if rank is not None and (best is None or rank > best[0]):
                best = (rank, d)
    if best is not None:
        return best[1]
    return next(
        (d for d in dispatches if d.domain_regex and re.fullmatch(d.domain_regex, host)), None
    )


def matches_host(host: str, patterns: Iterable[str]) -> bool:
    """ServiceEntry host semantics: exact, or `*.suffix` wildcard, or `*`."""
    for pattern in patterns:
        if pattern == host or pattern == "*":
            return True
        if pattern.startswith("*.") and host.endswith(pattern[1:]):
            return True
    return False


@dataclass(frozen=True)
class Gate:
    """The admission rules (from `FenceSettings`)."""

    external_allow: Sequence[str] = ()
    dispatches: Sequence[Dispatch] = ()

    def verdict(
        self,
        host: str,
        *,
        external: bool,
        registered: bool,
        service_entry_hosts: Iterable[str] = (),
    ) -> str | None:
        """None to learn the edge, else why not (`dispatched`, `external-dropped`)."""
        chosen = dispatch_of(host, self.dispatches)
        if chosen is not None and chosen.cluster != GLOBAL_SIDECAR:
            return DISPATCHED
        if not external or registered:
            return None
        if any(fnmatch.fnmatchcase(host, glob) for glob in self.external_allow):
            return None
        return None if matches_host(host, service_entry_hosts) else EXTERNAL
