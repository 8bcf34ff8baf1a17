"""Object metadata rules: names, system fields, generation and the status/spec split."""

from __future__ import annotations

import random
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from .copying import clone
from .errors import bad_request, invalid
from .resources import ResourceInfo

Obj = dict[str, Any]

SYSTEM_FIELDS = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "managedFields",
    "selfLink",
)
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_LABEL_NAMED = {("", "namespaces"), ("", "services")}
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"


def now() -> str:
    """The current time as RFC 3339 in UTC with a Z suffix (what the API server writes)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def generated_name(prefix: str) -> str:
    return prefix + "".join(random.choices(_NAME_CHARS, k=5))


def check_name(info: ResourceInfo, name: str) -> None:
    """422 when name is not a valid object name for the resource."""
    label = info.key in _LABEL_NAMED
    pattern, limit = (_LABEL, 63) if label else (_SUBDOMAIN, 253)
    if pattern.match(name) and len(name) <= limit:
        return
    what = "RFC 1123 label" if label else "RFC 1123 subdomain"
    message = (
        f'Invalid value: "{name}": a lowercase {what} must consist of lower case alphanumeric '
        "characters, '-' or '.', and must start and end with an alphanumeric character"
    )
    cause = {"reason": "FieldValueInvalid", "field": "metadata.name", "message": message}
    raise invalid(info.kind, info.group, name, [cause])


def check_identity(info: ResourceInfo, obj: Any, version: str) -> Obj:
    """400 unless obj is a JSON object of the served kind; fills apiVersion/kind if missing."""
    if not isinstance(obj, dict):
        raise bad_request("the request body must be a JSON object")
    api_version = info.api_version(version)
    if obj.get("kind", info.kind) != info.kind:
        raise bad_request(f"the kind of the object ({obj.get('kind')}) must be {info.kind}")
    if obj.get("apiVersion", api_version) not in {info.api_version(v) for v in info.versions}:
        raise bad_request(
            f"the API version in the data ({obj['apiVersion']}) must be {api_version}"
        )
    obj = clone(obj)
    obj["apiVersion"], obj["kind"] = api_version, info.kind
    meta = obj.get("metadata")
    if meta is None:
        obj["metadata"] = {}
    elif not isinstance(meta, dict):
        raise bad_request("metadata must be an object")
    return obj


def init_metadata(obj: Obj) -> None:
    """Replace system fields for a create: uid, timestamp, generation 1."""
    meta = obj["metadata"]
    for field in SYSTEM_FIELDS:
        meta.pop(field, None)
    meta["uid"] = str(uuid.uuid4())
    meta["creationTimestamp"] = now()
    meta["generation"] = 1


def carry_system_metadata(old: Obj, new: Obj) -> None:
    """On update, system fields (and name/namespace) come from the stored object."""
    meta = new["metadata"]
    for field in SYSTEM_FIELDS:
        meta.pop(field, None)
    for field in (*SYSTEM_FIELDS, "name", "namespace", "generateName"):
        if field in old["metadata"]:
            meta[field] = old["metadata"][field]
    meta.pop("managedFields", None)


def content(info: ResourceInfo, obj: Obj) -> Obj:
    """What counts as 'spec' for generation: everything but metadata (and status if a subresource)."""
    skip = {"metadata", "apiVersion", "kind"}
    if info.status_subresource:
        skip.add("status")
    return {k: v for k, v in obj.items() if k not in skip}


def only_status_from(old: Obj, new: Obj) -> Obj:
    """A /status write: the stored object with just the status taken from new."""
    result = clone(old)
    if "status" in new:
        result["status"] = clone(new["status"])
    else:
        result.pop("status", None)
    return result


def keep_status_of(old: Obj | None, new: Obj) -> None:
    """A main-resource write to a kind with a status subresource leaves status alone."""
    new.pop("status", None)
    if old is not None and "status" in old:
        new["status"] = clone(old["status"])


def bump_generation(info: ResourceInfo, old: Obj, new: Obj) -> None:
    generation = old["metadata"].get("generation", 1)
    changed = content(info, old) != content(info, new)
    new["metadata"]["generation"] = generation + 1 if changed else generation


def same_object(old: Obj, new: Obj) -> bool:
    """True when an update would change nothing (ignoring apiVersion and resourceVersion)."""

    def strip(obj: Obj) -> Obj:
        meta = {k: v for k, v in obj.get("metadata", {}).items() if k != "resourceVersion"}
        return {**{k: v for k, v in obj.items() if k != "apiVersion"}, "metadata": meta}

    return strip(old) == strip(new)


def with_version(info: ResourceInfo, version: str, obj: Obj) -> Obj:
    """obj as served at the requested version (only apiVersion differs between versions)."""
    return {**obj, "apiVersion": info.api_version(version)}
