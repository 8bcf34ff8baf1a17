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
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, model_validator

GLOBAL_SIDECAR = "_GLOBAL_SIDECAR"
PASSTHROUGH = "_PASSTHROUGH"
ISTIO_PASSTHROUGH = "PassthroughCluster"


class Dispatch(BaseModel):
    """One dispatch rule (Slime's `general.dispatches[]`)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
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

    @property
    def to_global_sidecar(self) -> bool:
        return self.cluster == GLOBAL_SIDECAR

    @property
    def to_passthrough(self) -> bool:
        return self.cluster in (PASSTHROUGH, ISTIO_PASSTHROUGH)
