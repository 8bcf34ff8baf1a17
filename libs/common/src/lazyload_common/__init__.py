"""What two or more lazyload services share.

Only code used by at least two services lives here: settings groups, event models and their codec,
subjects, JetStream helpers, the admin app, the service runtime, guarded tasks, Kubernetes access
and host rules. It must never import a service.
"""

__all__ = [
    "admin",
    "codec",
    "dispatches",
    "errors",
    "events",
    "hosts",
    "jetstream",
    "kube",
    "limiting",
    "natsauth",
    "runtime",
    "schemas",
    "settings",
    "subjects",
    "tasks",
]
