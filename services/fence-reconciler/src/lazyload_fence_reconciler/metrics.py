"""Prometheus metrics of fence-reconciler (served on the admin app's /metrics).

The consume loop of `lazyload_common.jetstream` also counts `lazyload_consumed_total` and
`lazyload_dead_letters_total`; these add what only the reconciler knows.
"""

from __future__ import annotations

from prometheus_client import Counter

EDGES = Counter(
    "lazyload_fence_edges_total",
    "Dependency edges consumed, by outcome (learned, ignored, rejected, waiting, failed, "
    "dispatched, external-dropped)",
    ["outcome"],
)
WRITES = Counter(
    "lazyload_fence_writes_total", "ServiceFence writes that succeeded, by operation", ["op"]
)
CONFLICTS = Counter(
    "lazyload_fence_conflicts_total", "ServiceFence writes retried after a 409 conflict"
)
PUBLISHED = Counter(
    "lazyload_fence_events_published_total", "FenceChanged events published, by kind", ["kind"]
)
DEAD_LETTERS = Counter(
    "lazyload_fence_dead_letters_total",
    "Dependency messages the reconciler rejected (dead-lettered), by reason",
    ["reason"],
)
