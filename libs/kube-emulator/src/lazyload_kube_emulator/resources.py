"""Resource types the emulator serves: the built-in kinds and the shape CRDs turn into."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
STATUS_VERBS = ("get", "patch", "update")
RBAC_GROUP = "rbac.authorization.k8s.io"


@dataclass(frozen=True)
class ResourceInfo:
    """One served resource (a group, its served versions, a plural)."""

    group: str
    versions: tuple[str, ...]
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    status_subresource: bool = False
    builtin: bool = True
    storage_version: str = ""
    schemas: dict[str, dict[str, Any]] = field(default_factory=dict, compare=False, hash=False)
    printer_columns: dict[str, list[dict[str, Any]]] = field(
        default_factory=dict, compare=False, hash=False
    )

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def stored_version(self) -> str:
        return self.storage_version or self.versions[0]

    def api_version(self, version: str) -> str:
        return f"{self.group}/{version}" if self.group else version

    def discovery_entries(self) -> list[dict[str, Any]]:
        """The APIResourceList entries (the resource and its subresources)."""
        entry: dict[str, Any] = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(ALL_VERBS),
        }
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        if self.categories:
            entry["categories"] = list(self.categories)
        entries = [entry]
        if self.status_subresource:
            entries.append(
                {
                    "name": f"{self.plural}/status",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "kind": self.kind,
                    "verbs": list(STATUS_VERBS),
                }
            )
        return entries


def _builtin(
    group: str, plural: str, kind: str, namespaced: bool = True, **kw: Any
) -> ResourceInfo:
    version = "v1"
    return ResourceInfo(
        group=group,
        versions=(version,),
        plural=plural,
        singular=kind.lower(),
        kind=kind,
        namespaced=namespaced,
        storage_version=version,
        **kw,
    )


BUILTIN_RESOURCES: tuple[ResourceInfo, ...] = (
    _builtin("", "namespaces", "Namespace", False, short_names=("ns",), status_subresource=True),
    _builtin(
        "",
        "services",
        "Service",
        short_names=("svc",),
        categories=("all",),
        status_subresource=True,
    ),
    _builtin("", "endpoints", "Endpoints", short_names=("ep",)),
    _builtin("", "pods", "Pod", short_names=("po",), categories=("all",), status_subresource=True),
    _builtin("", "configmaps", "ConfigMap", short_names=("cm",)),
    _builtin("", "events", "Event", short_names=("ev",)),
    _builtin("", "serviceaccounts", "ServiceAccount", short_names=("sa",)),
    _builtin(RBAC_GROUP, "roles", "Role"),
    _builtin(RBAC_GROUP, "rolebindings", "RoleBinding"),
    _builtin(RBAC_GROUP, "clusterroles", "ClusterRole", False),
    _builtin(RBAC_GROUP, "clusterrolebindings", "ClusterRoleBinding", False),
    _builtin("discovery.k8s.io", "endpointslices", "EndpointSlice"),
    _builtin("coordination.k8s.io", "leases", "Lease"),
    _builtin(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        short_names=("crd", "crds"),
        status_subresource=True,
    ),
)

# Resources whose DELETE answers with the deleted object instead of a success Status.
RETURNS_DELETED_OBJECT = {("", "services"), ("", "pods")}

_VERSION_RE = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?\Z")


def version_priority(version: str) -> tuple[int, int, int, str]:
    """Sort key putting versions in Kubernetes priority order (GA > beta > alpha, newest first)."""
    match = _VERSION_RE.match(version)
    if not match:
        return (3, 0, 0, version)
    major, level, minor = match.groups()
    rank = {None: 0, "beta": 1, "alpha": 2}[level]
    return (rank, -int(major), -int(minor or 0), version)


def sort_versions(versions: list[str] | tuple[str, ...]) -> list[str]:
    return sorted(versions, key=version_priority)
