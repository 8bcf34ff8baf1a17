"""sidecar-writer: applies the Istio Sidecar of each ServiceFence from `FenceChanged` events.

Pipeline: `consuming` (JetStream batches, latest-wins, coalescing) -> `rendering` (pure: event ->
Sidecar) -> `validating` (Istio schema + host rules) -> `planning` (pure: create, replace, delete,
unchanged, conflict, stale) -> a sink: `applying` (the Kubernetes API, the only module that talks
to it) or `gitops` (YAML files). `repairing` periodically restores drifted Sidecars; `app` wires it.
"""

__all__ = [
    "app",
    "applying",
    "consuming",
    "errors",
    "gitops",
    "metrics",
    "planning",
    "rendering",
    "repairing",
    "settings",
    "sinks",
    "validating",
]
