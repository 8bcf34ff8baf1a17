"""Custom resource schemas: structural pruning and `openAPIV3Schema` validation."""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jsonschema

PRESERVE = "x-kubernetes-preserve-unknown-fields"
EMBEDDED = "x-kubernetes-embedded-resource"
INT_OR_STRING = "x-kubernetes-int-or-string"
ROOT_FIELDS = ("apiVersion", "kind", "metadata")


def to_json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Translate Kubernetes OpenAPI v3 extensions into plain JSON Schema (draft 4)."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key.startswith("x-kubernetes-") or key in ("nullable", "default", "example"):
            continue
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {k: to_json_schema(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = to_json_schema(value)
        elif key in ("allOf", "anyOf", "oneOf") and isinstance(value, list):
            out[key] = [to_json_schema(v) for v in value]
        else:
            out[key] = value
    if schema.get(INT_OR_STRING):
        out.pop("type", None)
        out.setdefault("allOf", []).append({"anyOf": [{"type": "integer"}, {"type": "string"}]})
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


@lru_cache(maxsize=256)
def _validator(schema_json: str) -> jsonschema.Draft4Validator:
    import jsonschema  # imported on first use: it is slow to import and only CRDs need it

    schema = to_json_schema(json.loads(schema_json))
    props = schema.get("properties")
    if isinstance(props, dict):
        props.pop("metadata", None)
    return jsonschema.Draft4Validator(schema)


def _field_path(error: jsonschema.ValidationError) -> str:
    parts = []
    for part in error.absolute_path:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        else:
            parts.append(f".{part}" if parts else str(part))
    return "".join(parts) or "<root>"


def _cause(error: jsonschema.ValidationError) -> dict[str, str]:
    field = _field_path(error)
    reason = "FieldValueInvalid"
    if error.validator == "required":
        reason = "FieldValueRequired"
        missing = error.message.split("'")[1] if "'" in error.message else ""
        field = f"{field}.{missing}" if field != "<root>" else missing
        return {"reason": reason, "field": field, "message": "Required value"}
    if error.validator == "enum":
        reason = "FieldValueNotSupported"
    return {"reason": reason, "field": field, "message": f"Invalid value: {error.message}"}


def validate(schema: dict[str, Any] | None, obj: dict[str, Any]) -> list[dict[str, str]]:
    """Causes for every schema violation of obj (metadata is not validated here)."""
    if not schema:
        return []
    validator = _validator(json.dumps(schema, sort_keys=True))
    instance = {k: v for k, v in obj.items() if k != "metadata"}
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    return [_cause(e) for e in errors]


def prune(schema: dict[str, Any] | None, obj: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A copy of obj with fields the structural schema does not know dropped, and their paths."""
    result = copy.deepcopy(obj)
    if not schema or schema.get(PRESERVE):
        return result, []
    dropped: list[str] = []
    _prune_object(schema, result, "", dropped, keep=ROOT_FIELDS)
    return result, dropped


def _prune_value(schema: dict[str, Any], value: Any, path: str, dropped: list[str]) -> None:
    if isinstance(value, dict):
        keep = ROOT_FIELDS if schema.get(EMBEDDED) else ()
        _prune_object(schema, value, path, dropped, keep)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            _prune_value(schema["items"], item, f"{path}[{i}]", dropped)


def _prune_object(
    schema: dict[str, Any], obj: dict[str, Any], path: str, dropped: list[str], keep: tuple
) -> None:
    if schema.get(PRESERVE) and "properties" not in schema:
        return
    props = schema.get("properties")
    extra = schema.get("additionalProperties")
    for key in list(obj):
        child = f"{path}.{key}" if path else key
        if key in keep:
            continue
        if props and key in props:
            _prune_value(props[key], obj[key], child, dropped)
        elif isinstance(extra, dict):
            _prune_value(extra, obj[key], child, dropped)
        elif extra is True or schema.get(PRESERVE):
            continue
        elif props is not None or extra is False or "type" in schema:
            del obj[key]
            dropped.append(child)
