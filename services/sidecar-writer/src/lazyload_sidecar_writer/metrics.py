"""Prometheus metrics of sidecar-writer (served on the admin app's /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

WRITES = Counter(
    "lazyload_sidecar_writer_writes_total",
    "Sidecar writes that reached the sink, by action (create, replace, delete)",
    ["action"],
)
OUTCOMES = Counter(
    "lazyload_sidecar_writer_outcomes_total",
    "Fence events settled, by outcome (applied, unchanged, deleted, conflict, dead-lettered, "
    "stale, superseded, coalesced, retried)",
    ["outcome"],
)
API_ERRORS = Counter(
    "lazyload_sidecar_writer_api_errors_total",
    "Error answers of the Kubernetes API, by HTTP status (`network` for transport failures)",
    ["code"],
)
DEAD_LETTERS = Counter(
    "lazyload_sidecar_writer_dead_letters_total",
    "Fence events dead-lettered, by reason (invalid-render, api-rejected)",
    ["reason"],
)
REFUSED = Counter(
    "lazyload_sidecar_writer_refused_total",
    "Fence events the writer refused to act on (dead-lettered, nothing written), by reason "
    "(invalid-event, namespace-not-managed, unknown-fence, uid-mismatch)",
    ["reason"],
)
REFUSALS = ("invalid-event", "namespace-not-managed", "unknown-fence", "uid-mismatch")
for _reason in REFUSALS:
    REFUSED.labels(_reason)
RENDER_FAILURES = Counter(
    "lazyload_sidecar_writer_render_failures_total",
    "Fences that could not become a valid Sidecar, by reason (no-selector, invalid)",
    ["reason"],
)
APPLY_SECONDS = Histogram(
    "lazyload_sidecar_writer_apply_seconds",
    "Time to apply one fence (read, decide, write, with retries)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
FIRST_CALL_TO_SIDECAR = Histogram(
    "lazyload_first_call_to_sidecar_seconds",
    "The SLI: from a learned host's first call (ingest's first-seen time, to the second) to the "
    "Sidecar carrying it written",
    buckets=(0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 60, 120, 300),
)
