"""accesslog-ingest: Envoy access logs (gRPC ALS) -> deduplicated dependency events on JetStream.

Layers, top to bottom: `app` (wiring); adapters `receiving` (gRPC ALS server), `indexing`
(Kubernetes Services index), `publishing` (JetStream); the pure domain `ingesting`, `parsing`,
`edges`, `deduplicating`, `records`. Adapters do not import each other. The test kit (ALS
message builders, throw-away certificates) is `lazyload_testing.ingest` and
`lazyload_testing.certificates`, outside this package.
"""

__all__ = [
    "app",
    "deduplicating",
    "edges",
    "indexing",
    "ingesting",
    "metrics",
    "parsing",
    "publishing",
    "receiving",
    "records",
    "settings",
]
