"""Checks a rendered Sidecar before it may be applied: Istio's schema, then lazyload's host rules.

The schema is Istio's own (`lazyload_common.schemas`, shared with global-pilot) of the configured
`networking.istio.io` version; a field the model does not know counts as an error too (pydantic
would drop it silently). Every egress host must be `<namespace|*>/<host|*>` with a valid namespace
and an RFC 1123 host (`lazyload_common.hosts`), and never `*/*`. A render that fails is a bug:
the caller dead-letters the event and writes nothing. Building the model takes seconds of CPU:
the app warms the configured version up at start-up (`sidecar_model`).
"""

from __future__ import annotations

import re
from typing import Any

from lazyload_common import events, hosts, schemas

from lazyload_sidecar_writer import errors, rendering

VERSIONS = schemas.VERSIONS


def sidecar_model(version: str) -> Any:
    """The `Sidecar` model of `networking.istio.io/<version>` (None: unsupported); built once."""
    return schemas.model(f"{rendering.GROUP}/{version}", "Sidecar")


_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]\Z")


_UID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,127}")
"""A ServiceFence uid as the API server gives it (a UUID; anything of that alphabet is read)."""


def event_problems(event: events.FenceChanged) -> list[str]:
    """What is wrong with the identity of a fence event, whatever it asks for (a deleted or
    disabled fence too): its namespace and name become an API path, a subject or a file path,
    its uid an ownerReference and a precondition. Empty when they are usable. (The hosts and
    the selector, which only a live fence acts on, are checked in its rendered Sidecar:
    `validate`.)"""
    problems = []
    if not hosts.is_valid_namespace(event.namespace):
        problems.append(f"namespace {event.namespace[:100]!r}: not a namespace name")
    if not is_object_name(event.name):
        problems.append(f"name {event.name[:300]!r}: not a DNS subdomain")
    if event.uid and not _UID.fullmatch(event.uid):
        problems.append(f"uid {event.uid[:140]!r}: not a Kubernetes uid")
    return problems


def is_object_name(name: str) -> bool:
    """True for a name the API server accepts for a Sidecar or a ServiceFence (a DNS subdomain)."""
    return hosts.is_object_name(name)


def validate(sidecar: rendering.RawObject) -> None:
    """Raise `InvalidSidecar` with every reason when `sidecar` must not be applied."""
    problems = schema_problems(sidecar)
    problems += metadata_problems(sidecar.get("metadata", {}))
    spec = sidecar.get("spec") or {}
    problems += selector_problems((spec.get("workloadSelector") or {}).get("labels") or {})
    for listener in spec.get("egress") or []:
        problems += [
            f"egress host {h!r}: {p}" for h in listener.get("hosts", []) if (p := host_problem(h))
        ]
    if problems:
        raise errors.InvalidSidecar("; ".join(problems[:10]))


def schema_problems(sidecar: rendering.RawObject) -> list[str]:
    """Where `sidecar` differs from Istio's schema of its apiVersion (empty when it conforms)."""
    return schemas.problems(sidecar)


def metadata_problems(metadata: rendering.RawObject) -> list[str]:
    """Name and namespace the API server would refuse."""
    problems = []
    name, namespace = metadata.get("name", ""), metadata.get("namespace", "")
    if not is_object_name(name):
        problems.append(f"metadata.name {name!r}: not a DNS subdomain")
    if not hosts.is_valid_namespace(namespace):
        problems.append(f"metadata.namespace {namespace!r}: not a namespace name")
    return problems


def selector_problems(labels: dict[str, str]) -> list[str]:
    """An empty selector (every pod of the namespace) or labels Kubernetes would refuse."""
    if not labels:
        return ["spec.workloadSelector.labels: empty (would select every workload)"]
    return [
        f"workload selector label {key!r}={value!r}: invalid"
        for key, value in labels.items()
        if not (_label_key_ok(key) and _label_value_ok(value))
    ]


def _label_key_ok(key: str) -> bool:
    prefix, sep, name = key.rpartition("/")
    if sep and not (prefix and len(prefix) <= 253 and _SUBDOMAIN.match(prefix)):
        return False
    return len(name) <= 63 and bool(_LABEL_NAME.match(name))


def _label_value_ok(value: str) -> bool:
    return value == "" or (len(value) <= 63 and bool(_LABEL_NAME.match(value)))


def host_problem(host: str) -> str | None:
    """Why an egress host is not acceptable, or None when it is."""
    namespace, sep, name = host.partition("/")
    if not sep:
        return "missing `<namespace>/`"
    if namespace != "*" and not hosts.is_valid_namespace(namespace):
        return "invalid namespace"
    if name == "*":
        return "the whole mesh (`*/*`)" if namespace == "*" else None
    if not hosts.is_valid_host(name):
        return "not a lower-case RFC 1123 host"
    return None
