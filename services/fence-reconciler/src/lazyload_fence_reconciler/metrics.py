"""Prometheus metrics of fence-reconciler (served on the admin app's /metrics).

The consume loop of `lazyload_common.jetstream` also counts `lazyload_consumed_total` and
`lazyload_dead_letters_total`; these add what only the reconciler knows.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

EDGES = Counter(
    "lazyload_fence_edges_total",
    "Dependency edges consumed, by outcome (learned, ignored, rejected, waiting, failed, "
    "dispatched, external-dropped)",
    ["outcome"],
)
WRITES = Counter(
    "lazyload_fence_writes_total", "ServiceFence writes that succeeded, by operation", ["op"]
)
TOMBSTONE_FAILURES = Counter(
    "lazyload_fence_tombstone_write_failures_total",
    "Writes to the tombstones' ConfigMap that failed (RBAC, the API server, the ConfigMap at its "
    "1 MiB limit): the tombstone of a deleted manual fence stays in this replica's memory only",
)
CONFLICTS = Counter(
    "lazyload_fence_conflicts_total", "ServiceFence writes retried after a 409 conflict"
)
PUBLISHED = Counter(
    "lazyload_fence_events_published_total", "FenceChanged events published, by kind", ["kind"]
)
AUTO_FENCE_PENDING = Gauge(
    "lazyload_fence_auto_fence_pending",
    "Services auto-fence selects that have no ServiceFence yet (created before any traffic, "
    "paced by the client rate limit); 0 once every one is fenced",
)
AUTO_FENCED = Counter(
    "lazyload_fence_auto_fenced_total",
    "ServiceFences created for a Service before any traffic (eager auto-fence)",
)
DEAD_LETTERS = Counter(
    "lazyload_fence_dead_letters_total",
    "Dependency messages the reconciler rejected (dead-lettered), by reason",
    ["reason"],
)
FENCES = Gauge(
    "lazyload_fences",
    "ServiceFences whose last published event is not a deletion (as this replica published or "
    "seeded them), by state (enabled, disabled)",
    ["state"],
)
HOSTS = Gauge(
    "lazyload_fence_hosts",
    "Hosts in the published desired sets of all enabled fences (the egress hosts of lazyload's "
    "Sidecars, before the writer adds the base hosts)",
)
