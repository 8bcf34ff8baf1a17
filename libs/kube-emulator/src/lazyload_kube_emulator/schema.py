"""Custom resource schemas: structural pruning and `openAPIV3Schema` validation."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from .copying import clone

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


class _Compiled:
    """A schema's two validators: a compiled one (fastjsonschema: a yes/no, fast, for the
    common valid write) and jsonschema's, which names every violation when there is one."""

    def __init__(self, schema_json: str) -> None:
        import fastjsonschema  # imported on first use: only CRDs need them
        import jsonschema

        schema = to_json_schema(json.loads(schema_json))
        props = schema.get("properties")
        if isinstance(props, dict):
            props.pop("metadata", None)
        self.full = jsonschema.Draft4Validator(schema)
        self.fast = fastjsonschema.compile(
            {**schema, "$schema": "http://json-schema.org/draft-04/schema#"}
        )
        self.invalid = fastjsonschema.JsonSchemaException


@lru_cache(maxsize=256)
def _compiled(schema_json: str) -> _Compiled:
    return _Compiled(schema_json)


_BY_ID: dict[int, tuple[dict[str, Any], _Compiled]] = {}


def _validators(schema: dict[str, Any]) -> _Compiled:
    """The validators of `schema`, found by identity first (a served schema is one long-lived
    dict: no serialization per write), then by content."""
    known = _BY_ID.get(id(schema))
    if known is not None and known[0] is schema:
        return known[1]
    compiled = _compiled(json.dumps(schema, sort_keys=True))
    if len(_BY_ID) > 256:
        _BY_ID.clear()
    _BY_ID[id(schema)] = (schema, compiled)
    return compiled


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
    validators = _validators(schema)
    instance = {k: v for k, v in obj.items() if k != "metadata"}
    try:
        validators.fast(instance)
        return []
    except validators.invalid:
        pass  # name every violation
    errors = sorted(validators.full.iter_errors(instance), key=lambda e: list(e.absolute_path))
    return [_cause(e) for e in errors]


def prune(schema: dict[str, Any] | None, obj: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A copy of obj with fields the structural schema does not know dropped, and their paths."""
    result = clone(obj)
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
