"""NATS subjects and JetStream stream names: the topics other tools subscribe to.

Namespace and name tokens are Kubernetes DNS labels or subdomains; a '.' inside a name would add a
subject token, so it is escaped as '_' (names of Services cannot contain '_').
"""

from __future__ import annotations

DEPS_STREAM = "LAZYLOAD_DEPS"
FENCES_STREAM = "LAZYLOAD_FENCES"
SIDECARS_STREAM = "LAZYLOAD_SIDECARS"
DLQ_STREAM = "LAZYLOAD_DLQ"

DEPS_PREFIX = "lazyload.deps"
FENCE_PREFIX = "lazyload.fence"
SIDECAR_PREFIX = "lazyload.sidecar"
DLQ_PREFIX = "lazyload.dlq"


def _token(value: str) -> str:
    return value.replace(".", "_").replace("*", "_").replace(">", "_").replace(" ", "_") or "_"


def deps(namespace: str, name: str) -> str:
    """Subject of dependency events whose caller is `namespace/name`."""
    return f"{DEPS_PREFIX}.{_token(namespace)}.{_token(name)}"


def fence(namespace: str, name: str) -> str:
    """Subject of fence events of the ServiceFence `namespace/name`."""
    return f"{FENCE_PREFIX}.{_token(namespace)}.{_token(name)}"


def sidecar(namespace: str, name: str) -> str:
    """Subject of sidecar-applied events of the Sidecar `namespace/name`."""
    return f"{SIDECAR_PREFIX}.{_token(namespace)}.{_token(name)}"


def dead_letter(service: str) -> str:
    """Subject where `service` puts what it could not process, with the reason."""
    return f"{DLQ_PREFIX}.{_token(service)}"


STREAM_SUBJECTS: dict[str, list[str]] = {
    DEPS_STREAM: [f"{DEPS_PREFIX}.>"],
    FENCES_STREAM: [f"{FENCE_PREFIX}.>"],
    SIDECARS_STREAM: [f"{SIDECAR_PREFIX}.>"],
    DLQ_STREAM: [f"{DLQ_PREFIX}.>"],
}


def stream_of(subject: str) -> str | None:
    """The lazyload stream that holds `subject`, or None."""
    for stream, patterns in STREAM_SUBJECTS.items():
        if any(subject.startswith(p[:-1]) for p in patterns):  # `prefix.>`
            return stream
    return None
