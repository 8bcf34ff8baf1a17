"""`dispatches`: Slime's custom traffic dispatch, a domain list or a regex -> a target.

A `Dispatch` sends the hosts it matches (`domains`, Envoy virtual-host domains such as
`*.example.com`, or `domain_regex`, an RE2 full match on `:authority`) to `cluster`:

- `_GLOBAL_SIDECAR`: the global-sidecar (mesh side: the `to-global-sidecar` route with the
  `Slime-Orig-Dest` and `Slime-Source-Ns` headers; on the global-sidecar: its usual resolution);
- `_PASSTHROUGH` or `PassthroughCluster`: the original destination (mesh side: Istio's
  `PassthroughCluster`; on the global-sidecar: the `Slime-Orig-Dest` ORIGINAL_DST cluster);
- anything else: a literal cluster name, e.g. `outbound|80||egress.gw.svc.cluster.local`.

Settings give them as JSON, e.g.
`LAZYLOAD_ROUTING__DISPATCHES='[{"name":"ext","domains":["*.example.com"],"cluster":"_PASSTHROUGH"}]'`.

Shared by global-pilot (which renders the routes) and fence-reconciler (which must not learn a host
that a dispatch sends elsewhere), so both read the same settings the same way: `dispatch_of`
mirrors Envoy's choice (the most specific domain wins, else the first matching regex).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field, model_validator

GLOBAL_SIDECAR = "_GLOBAL_SIDECAR"
PASSTHROUGH = "_PASSTHROUGH"
ISTIO_PASSTHROUGH = "PassthroughCluster"


class Dispatch(BaseModel):
    """One dispatch rule (Slime's `general.dispatches[]`)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    domains: tuple[str, ...] = ()
    domain_regex: str | None = Field(default=None, alias="domainRegex")
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

    @property
    def to_global_sidecar(self) -> bool:
        return self.cluster == GLOBAL_SIDECAR

    @property
    def to_passthrough(self) -> bool:
        return self.cluster in (PASSTHROUGH, ISTIO_PASSTHROUGH)


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
