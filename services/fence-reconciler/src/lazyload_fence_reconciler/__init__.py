"""fence-reconciler: keeps one ServiceFence per service from dependency events and publishes
FenceChanged events.

Layers: `app` (wiring) -> adapters (`consuming`, `applying`, `watching`, `publishing`, `api`) and
the cycle that uses them (`reconciling`, `tombstoning`: triggers and I/O) -> the pure domain
(`fences`, `desiring`, `expanding`, `admitting`, `policies`, `planning`, `changes`, `deciding`)
-> `lazyload_common`. The domain does no I/O; only `applying` writes to the Kubernetes API.
"""

__all__ = [
    "admitting",
    "api",
    "app",
    "applying",
    "changes",
    "consuming",
    "deciding",
    "desiring",
    "expanding",
    "fences",
    "metrics",
    "planning",
    "policies",
    "publishing",
    "reconciling",
    "settings",
    "tombstoning",
    "watching",
]
