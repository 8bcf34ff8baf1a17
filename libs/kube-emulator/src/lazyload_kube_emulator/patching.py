"""PATCH bodies: JSON merge patch, JSON patch and a strategic merge patch for built-in kinds."""

from __future__ import annotations

import json
from typing import Any

import jsonpatch

from .copying import clone
from .errors import ApiError, bad_request, unsupported_media_type
from .resources import ResourceInfo

MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"

# List fields of built-in kinds that strategic merge patch merges by a key.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
    "conditions": "type",
    "ownerReferences": "uid",
    "hostAliases": "ip",
}
MERGED_PRIMITIVE_LISTS = {"finalizers"}


def accepted_types(info: ResourceInfo) -> list[str]:
    types = [JSON_PATCH, MERGE]
    return [*types, STRATEGIC] if info.builtin else types


def apply_patch(info: ResourceInfo, current: dict[str, Any], raw: bytes, content_type: str) -> Any:
    """current with the patch in raw applied, by the patch type named in content_type."""
    media = content_type.split(";")[0].strip().lower()
    if media not in accepted_types(info):
        raise unsupported_media_type(media, accepted_types(info))
    try:
        patch = json.loads(raw or b"null")
    except ValueError as exc:
        raise bad_request(f"error decoding patch: {exc}") from exc
    if media == JSON_PATCH:
        return _json_patch(current, patch)
    if not isinstance(patch, dict):
        raise bad_request("a merge patch must be a JSON object")
    if media == MERGE:
        return merge_patch(current, patch)
    return strategic_merge(current, patch)


def _json_patch(current: dict[str, Any], patch: Any) -> Any:
    if not isinstance(patch, list):
        raise bad_request("a JSON patch must be a JSON array of operations")
    try:
        return jsonpatch.JsonPatch(patch).apply(current)
    except jsonpatch.JsonPatchTestFailed as exc:
        raise ApiError(
            422, f"the test operation of the JSON patch failed: {exc}", "Invalid"
        ) from exc
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
        raise ApiError(422, f"the JSON patch could not be applied: {exc}", "Invalid") from exc
    except (TypeError, KeyError, ValueError) as exc:
        raise bad_request(f"invalid JSON patch: {exc}") from exc


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return clone(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge(target: Any, patch: dict[str, Any]) -> Any:
    """A strategic merge patch: merge patch plus `$patch` directives and keyed list merging."""
    directive = patch.get("$patch")
    body = {k: v for k, v in patch.items() if not k.startswith("$")}
    if directive == "replace":
        return clone(body)
    if directive == "delete":
        return None
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in body.items():
        result = _merge_field(result, key, value)
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/") and isinstance(value, list):
            field = key.split("/", 1)[1]
            result[field] = [v for v in result.get(field) or [] if v not in value]
    return result


def _merge_field(result: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    old = result.get(key)
    if value is None:
        result.pop(key, None)
    elif isinstance(value, dict):
        merged = strategic_merge(old, value)
        if merged is None:
            result.pop(key, None)
        else:
            result[key] = merged
    elif isinstance(value, list) and isinstance(old, list):
        result[key] = _merge_list(key, old, value)
    else:
        result[key] = _strip_directives(value)
    return result


def _merge_key(field: str, items: list[Any]) -> str | None:
    if field == "ports":
        has_container_port = any(isinstance(i, dict) and "containerPort" in i for i in items)
        return "containerPort" if has_container_port else "port"
    return MERGE_KEYS.get(field)


def _merge_list(field: str, old: list[Any], patch: list[Any]) -> list[Any]:
    if field in MERGED_PRIMITIVE_LISTS:
        return old + [v for v in patch if v not in old]
    key = _merge_key(field, old + patch)
    if key is None or not all(isinstance(i, dict) for i in old + patch):
        return _strip_directives(patch)
    result = [clone(i) for i in old]
    for item in patch:
        index = next((n for n, o in enumerate(result) if o.get(key) == item.get(key)), None)
        if item.get("$patch") == "delete":
            if index is not None:
                result.pop(index)
        elif index is None:
            result.append(_strip_directives(item))
        else:
            result[index] = strategic_merge(result[index], item)
    return result


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value
