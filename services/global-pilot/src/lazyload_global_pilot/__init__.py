"""global-pilot: the xDS control plane of the global-sidecar Envoy.

Four parts, go-control-plane style: `rendering` (mesh state -> Envoy resources, pure),
`snapshots` + `cache` (versioned, consistent resource sets per node), `server` (ADS, state of the
world) and the wiring (`watching` for Kubernetes, `app`). `bootstrap` renders the Envoy bootstrap
of a global-sidecar that points at global-pilot.
"""

__all__ = [
    "app",
    "bootstrap",
    "cache",
    "errors",
    "mesh",
    "metrics",
    "rendering",
    "resources",
    "server",
    "settings",
    "snapshots",
    "watching",
]
