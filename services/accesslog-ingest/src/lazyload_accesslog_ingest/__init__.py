"""accesslog-ingest: Envoy access logs (gRPC ALS) -> deduplicated dependency events on JetStream.

Layers, top to bottom: `app` (wiring); adapters `receiving` (gRPC ALS server), `indexing`
(Kubernetes Services index), `publishing` (JetStream); the pure domain `ingesting`, `parsing`,
`edges`, `deduplicating`, `records`. Adapters do not import each other. `testing` builds ALS
messages and streams them, for tests and demos.
"""

__all__ = [
    "app",
    "certificates",
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
    "testing",
]
