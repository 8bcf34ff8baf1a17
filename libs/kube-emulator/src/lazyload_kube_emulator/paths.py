"""Turning REST paths (`/api/v1/...`, `/apis/g/v/...`) into a resolved `Target`."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ApiError, no_such_route
from .registry import Registry
from .resources import ResourceInfo

NAMESPACE_SUBRESOURCES = {"status", "finalize"}


@dataclass(frozen=True)
class Target:
    """What a request addresses: a resource at a version, maybe a namespace, name, subresource.

    `namespace` is None for cluster-scoped resources and for lists across all namespaces.
    """

    info: ResourceInfo
    version: str
    namespace: str | None
    name: str | None = None
    subresource: str | None = None
    legacy_watch: bool = False

    @property
    def ns(self) -> str:
        return self.namespace or ""


def _split(rest: str) -> tuple[list[str], bool]:
    segments = [s for s in rest.split("/") if s]
    if segments and segments[0] == "watch":
        return segments[1:], True
    return segments, False


def resolve(registry: Registry, group: str, version: str, rest: str) -> Target:
    """The Target for a path below a group version; 404 for anything not served."""
    segments, legacy_watch = _split(rest)
    namespace: str | None = None
    if (
        len(segments) >= 3
        and segments[0] == "namespaces"
        and segments[2] not in NAMESPACE_SUBRESOURCES
    ):
        namespace, segments = segments[1], segments[2:]
    if not segments or len(segments) > 3:
        raise no_such_route()
    plural, name, sub = ([*segments, None, None])[:3]
    info = registry.lookup(group, version, plural)
    if info is None:
        raise no_such_route()
    if namespace is not None and not info.namespaced:
        raise no_such_route()
    if info.namespaced and namespace is None and name is not None:
        raise no_such_route()
    if sub is not None and not (sub == "status" and info.status_subresource):
        raise no_such_route()
    if legacy_watch and name is not None:
        raise ApiError(405, "watching a single object by name is not supported; use fieldSelector")
    return Target(info, version, namespace, name, sub, legacy_watch)
