"""fence-reconciler: keeps one ServiceFence per service from dependency events and publishes
FenceChanged events.

Layers: `app` (wiring) -> adapters (`consuming`, `applying`, `watching`, `publishing`, `api`) and
the cycle that uses them (`reconciling`, `tombstoning`) -> the pure domain (`fences`,
`desiring`, `expanding`, `admitting`, `policies`)
-> `lazyload_common`. The domain does no I/O; only `applying` writes to the Kubernetes API.
"""

__all__ = [
    "admitting",
    "api",
    "app",
    "applying",
    "consuming",
    "desiring",
    "expanding",
    "fences",
    "metrics",
    "policies",
    "publishing",
    "reconciling",
    "settings",
    "tombstoning",
    "watching",
]
