"""Which learned edges may enter a fence: dispatched hosts and unknown external hosts may not.

- `Dispatch` has the shape and meaning of global-pilot's (Slime's `dispatches`): `domains` (Envoy
  virtual-host domains: exact, `*.suffix`, `prefix.*`, `*`) or `domainRegex` (full match). A host a
  dispatch sends anywhere but `_GLOBAL_SIDECAR` never reaches the global-sidecar path, so adding it
  to a Sidecar would be wrong: it is not added. Envoy's choice is mirrored: the most specific
  domain dispatch wins, else the first regex dispatch.
- An external edge (`external=True`) is kept when ingest matched it to a ServiceEntry (it then
  carries `destination_namespace`), when its host is a ServiceEntry host we watch, or when it
  matches the allow list (globs); otherwise it is dropped and counted.
- An internal edge whose host is a Service FQDN (`<name>.<ns>.svc.<domain>`) naming no Service
  (nor a ServiceEntry host) is dropped (`unknown-service`): a forged or mistyped destination never
  widens a Sidecar.

Pure; the reconciler calls `Gate.verdict` for every edge before learning it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from lazyload_common.dispatches import GLOBAL_SIDECAR, Dispatch, dispatch_of

DISPATCHED = "dispatched"
EXTERNAL = "external-dropped"
UNKNOWN_SERVICE = "unknown-service"


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
    learn_unknown_services: bool = False

    def verdict(
        self,
        host: str,
        *,
        external: bool,
        registered: bool,
        service_entry_hosts: Iterable[str] = (),
        service_exists: bool | None = None,
    ) -> str | None:
        """None to learn the edge, else why not (`dispatched`, `external-dropped`,
        `unknown-service`). `service_exists`: whether the Service a Service FQDN names exists
        (None: the host names no Service)."""
        chosen = dispatch_of(host, self.dispatches)
        if chosen is not None and chosen.cluster != GLOBAL_SIDECAR:
            return DISPATCHED
        if not external:
            if (
                service_exists is False
                and not self.learn_unknown_services
                and not matches_host(host, service_entry_hosts)
            ):
                return UNKNOWN_SERVICE
            return None
        if registered:
            return None
        if any(fnmatch.fnmatchcase(host, glob) for glob in self.external_allow):
            return None
        return None if matches_host(host, service_entry_hosts) else EXTERNAL
