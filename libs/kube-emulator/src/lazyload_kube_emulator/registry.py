"""The set of served resources: built-ins plus whatever the stored CRDs turn on."""

from __future__ import annotations

import re
from typing import Any

from .resources import BUILTIN_RESOURCES, ResourceInfo, sort_versions

CRD_KEY = ("apiextensions.k8s.io", "customresourcedefinitions")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")


class Registry:
    """Maps (group, plural) to the `ResourceInfo` that serves it."""

    def __init__(self) -> None:
        self._resources: dict[tuple[str, str], ResourceInfo] = {}
        self._crd_keys: dict[str, tuple[str, str]] = {}
        for info in BUILTIN_RESOURCES:
            self._resources[info.key] = info

    def get(self, group: str, plural: str) -> ResourceInfo | None:
        return self._resources.get((group, plural))

    def lookup(self, group: str, version: str, plural: str) -> ResourceInfo | None:
        info = self._resources.get((group, plural))
        if info is None or version not in info.versions:
            return None
        return info

    def all(self) -> list[ResourceInfo]:
        return list(self._resources.values())

    def groups(self) -> dict[str, list[str]]:
        """Each group with its served versions in priority order (the core group as "")."""
        versions: dict[str, set[str]] = {}
        for info in self._resources.values():
            versions.setdefault(info.group, set()).update(info.versions)
        return {group: sort_versions(list(vs)) for group, vs in sorted(versions.items())}

    def in_group_version(self, group: str, version: str) -> list[ResourceInfo]:
        return [i for i in self._resources.values() if i.group == group and version in i.versions]

    def owner_of(self, group: str, plural: str) -> str | None:
        """The CRD name that serves (group, plural), or None (built-in or unserved)."""
        for name, key in self._crd_keys.items():
            if key == (group, plural):
                return name
        return None

    def install_crd(self, crd: dict[str, Any]) -> ResourceInfo:
        info = info_from_crd(crd)
        name = crd["metadata"]["name"]
        old_key = self._crd_keys.get(name)
        if old_key is not None and old_key != info.key:
            self._resources.pop(old_key, None)
        self._crd_keys[name] = info.key
        self._resources[info.key] = info
        return info

    def remove_crd(self, name: str) -> tuple[str, str] | None:
        key = self._crd_keys.pop(name, None)
        if key is not None:
            self._resources.pop(key, None)
        return key


def info_from_crd(crd: dict[str, Any]) -> ResourceInfo:
    """The `ResourceInfo` a (validated) CRD object describes."""
    spec = crd["spec"]
    names = spec["names"]
    served = [v for v in spec["versions"] if v.get("served", True)]
    storage = next(v["name"] for v in spec["versions"] if v.get("storage"))
    return ResourceInfo(
        group=spec["group"],
        versions=tuple(v["name"] for v in served),
        plural=names["plural"],
        singular=names.get("singular") or names["kind"].lower(),
        kind=names["kind"],
        namespaced=spec.get("scope", "Namespaced") == "Namespaced",
        short_names=tuple(names.get("shortNames") or ()),
        categories=tuple(names.get("categories") or ()),
        status_subresource=any(_has_status(v) for v in served),
        builtin=False,
        storage_version=storage,
        schemas={v["name"]: (v.get("schema") or {}).get("openAPIV3Schema") or {} for v in served},
        printer_columns={v["name"]: v.get("additionalPrinterColumns") or [] for v in served},
    )


def _has_status(version: dict[str, Any]) -> bool:
    return "status" in (version.get("subresources") or {})


def validate_crd(crd: dict[str, Any], registry: Registry) -> list[dict[str, str]]:
    """Causes (field, message) that make a CRD invalid; empty when it is fine."""
    causes: list[dict[str, str]] = []

    def bad(field: str, message: str) -> None:
        causes.append({"reason": "FieldValueInvalid", "field": field, "message": message})

    spec = crd.get("spec")
    if not isinstance(spec, dict):
        return [{"reason": "FieldValueRequired", "field": "spec", "message": "Required value"}]
    group = spec.get("group") or ""
    names = spec.get("names") or {}
    plural, kind = names.get("plural") or "", names.get("kind") or ""
    if "." not in group:
        bad("spec.group", f'Invalid value: "{group}": should be a domain with at least one dot')
    if not _DNS_LABEL.match(plural):
        bad("spec.names.plural", f'Invalid value: "{plural}": must be a lowercase DNS label')
    if not kind:
        bad("spec.names.kind", "Required value")
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        bad("spec.scope", 'Unsupported value: must be "Namespaced" or "Cluster"')
    expected = f"{plural}.{group}"
    if crd.get("metadata", {}).get("name") != expected:
        bad(
            "metadata.name", f'Invalid value: must be spec.names.plural+"."+spec.group ({expected})'
        )
    causes.extend(_version_causes(spec.get("versions")))
    owner = registry.owner_of(group, plural)
    taken = registry.get(group, plural) is not None and owner != crd["metadata"].get("name")
    if taken:
        bad("spec.names.plural", f'Invalid value: "{plural}": already served in group {group}')
    return causes


def _version_causes(versions: Any) -> list[dict[str, str]]:
    field = "spec.versions"
    if not isinstance(versions, list) or not versions:
        return [{"reason": "FieldValueRequired", "field": field, "message": "Required value"}]
    causes = []
    if sum(1 for v in versions if isinstance(v, dict) and v.get("storage")) != 1:
        message = "Invalid value: must have exactly one version marked as storage version"
        causes.append({"reason": "FieldValueInvalid", "field": field, "message": message})
    for i, version in enumerate(versions):
        if not isinstance(version, dict) or not version.get("name"):
            causes.append(
                {
                    "reason": "FieldValueRequired",
                    "field": f"{field}[{i}].name",
                    "message": "Required",
                }
            )
    return causes
