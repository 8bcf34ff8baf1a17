"""Prometheus metrics of accesslog-ingest (names are part of the service's contract).

Adapters count; the domain returns outcomes and never touches these.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Info

from lazyload_accesslog_ingest.records import Rejection

DECODER = Info("lazyload_ingest_decoder", "How ALS messages are read: decoder=compiled|protobuf")
MESSAGES = Counter(
    "lazyload_ingest_messages_total", "ALS messages received (malformed ones included)"
)
ENTRIES = Counter(
    "lazyload_ingest_entries_total", "ALS access-log entries received, by type", ["type"]
)
STREAMS = Gauge("lazyload_ingest_streams", "ALS streams open now")
STREAMS_REFUSED = Counter(
    "lazyload_ingest_streams_refused_total",
    "ALS streams refused because grpc.max_streams were open",
)
STREAMS_CLOSED = Counter(
    "lazyload_ingest_streams_closed_total",
    "ALS streams closed by the server, by reason (idle, malformed; on the mesh port "
    "unauthenticated, identity_mismatch)",
    ["reason"],
)
REJECTED = Counter(
    "lazyload_ingest_rejected_total",
    "ALS messages or entries that gave no edge, by reason",
    ["reason"],
)
UNKNOWN_CALLERS = Counter(
    "lazyload_ingest_unknown_callers_total",
    "Entries whose caller address maps to no Service (dropped, or published as unresolved)",
)
EDGES_OBSERVED = Counter(
    "lazyload_ingest_edges_observed_total", "Edges derived from entries (before deduplication)"
)
DUPLICATES = Counter(
    "lazyload_ingest_duplicates_suppressed_total",
    "Edges not published because they are pending or were published within the refresh interval",
)
PUBLISHED = Counter(
    "lazyload_ingest_edges_published_total", "Edges published and acked by JetStream", ["verdict"]
)
PUBLISH_FAILURES = Counter(
    "lazyload_ingest_publish_failures_total",
    "Publishes that failed (retried later), by error",
    ["error"],
)
START_TIMES_CLAMPED = Counter(
    "lazyload_ingest_start_times_clamped_total",
    "Entries whose start time was impossible (before 1970, not finite, far ahead of this "
    "replica's clock): their edge's first_seen is the time of observation instead",
)
FORGOTTEN = Counter(
    "lazyload_ingest_edges_forgotten_total",
    "Published edges forgotten because their fence no longer holds the host (a reset, a "
    "recycled host): the next call is published at once",
)
BUFFER_OVERFLOW = Counter(
    "lazyload_ingest_buffer_overflow_total",
    "Edges dropped because the publish buffer was full (offered again when next seen)",
)
BUFFERED = Gauge("lazyload_ingest_buffer_edges", "Edges queued or in flight to JetStream")
MEMORY = Gauge("lazyload_ingest_dedup_edges", "Edges held in the deduplication memory")
TLS_RELOADS = Counter(
    "lazyload_ingest_tls_reloads_total",
    "Changes of the ALS port's certificate files, by outcome (reloaded, failed)",
    ["outcome"],
)


def _initialise() -> None:
    """Create every known label value at 0, so dashboards and tests see the series at once."""
    for kind in ("http", "tcp"):
        ENTRIES.labels(kind)
    for reason in Rejection:
        REJECTED.labels(reason.value)
    for reason in ("idle", "malformed", "unauthenticated", "identity_mismatch"):
        STREAMS_CLOSED.labels(reason)
    for verdict in ("new", "refresh"):
        PUBLISHED.labels(verdict)
    for outcome in ("reloaded", "failed"):
        TLS_RELOADS.labels(outcome)


_initialise()
