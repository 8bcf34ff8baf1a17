"""Server-side `Table` rendering (what `kubectl get` asks for with `Accept: ...;as=Table`).

Columns: Name, then the kind's own columns (Services and Namespaces like the real API server,
a CRD's `additionalPrinterColumns`), then Age unless a CRD declares its own columns.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .paths import Target

TABLE_MARKER = "as=Table"
Obj = dict[str, Any]
Column = tuple[str, str, str, int]  # name, type, jsonPath, priority

NAME: Column = ("Name", "string", ".metadata.name", 0)
AGE: Column = ("Age", "date", ".metadata.creationTimestamp", 0)
BUILTIN_COLUMNS: dict[tuple[str, str], list[Column]] = {
    ("", "services"): [
        ("Type", "string", ".spec.type", 0),
        ("Cluster-IP", "string", ".spec.clusterIP", 0),
        ("External-IP", "string", ".spec.externalIPs", 0),
        ("Port(s)", "string", ".spec.ports", 0),
    ],
    ("", "namespaces"): [("Status", "string", ".status.phase", 0)],
}


def age(timestamp: str | None) -> str:
    """A kubectl-style short age ("42s", "5m", "3h", "2d") since an RFC 3339 timestamp."""
    if not timestamp:
        return "<unknown>"
    try:
        created = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return "<invalid>"
    seconds = max(0, int((datetime.now(UTC) - created).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _lookup(obj: Obj, json_path: str) -> Any:
    value: Any = obj
    for part in json_path.strip("{}").lstrip(".").split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _port(port: Obj) -> str:
    protocol = port.get("protocol", "TCP")
    if port.get("nodePort"):
        return f"{port.get('port')}:{port['nodePort']}/{protocol}"
    return f"{port.get('port')}/{protocol}"


def _cell(column: Column, obj: Obj) -> Any:
    value = _lookup(obj, column[2])
    if column[1] == "date":
        return age(value) if isinstance(value, str) else None
    if value is None:
        return "<none>" if column[2].startswith(".spec") else None
    if isinstance(value, list):
        shown = [_port(v) if isinstance(v, dict) else str(v) for v in value]
        return ",".join(shown) or "<none>"
    return value


def columns(target: Target) -> list[Column]:
    info = target.info
    declared = info.printer_columns.get(target.version) or []
    if declared:
        own = [
            (c["name"], c.get("type", "string"), c["jsonPath"], c.get("priority", 0))
            for c in declared
        ]
        return [NAME, *own]
    return [NAME, *BUILTIN_COLUMNS.get(info.key, []), AGE]


def _row_object(obj: Obj, include: str | None) -> Obj | None:
    if include == "None":
        return None
    if include == "Object":
        return obj
    meta = obj["metadata"]
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta}


def _definition(column: Column) -> Obj:
    name, kind, _, priority = column
    fmt = "name" if column is NAME else ""
    return {"name": name, "type": kind, "format": fmt, "description": "", "priority": priority}


def to_table(target: Target, body: Obj, include: str | None) -> Obj:
    """A list body (or a single object) as a meta.k8s.io/v1 Table."""
    items = body.get("items", [body])
    cols = columns(target)
    definitions = [_definition(c) for c in cols]
    rows = []
    for obj in items:
        row: Obj = {"cells": [_cell(c, obj) for c in cols]}
        row_object = _row_object(obj, include)
        if row_object is not None:
            row["object"] = row_object
        rows.append(row)
    meta = {
        k: v for k, v in body.get("metadata", {}).items() if k in ("resourceVersion", "continue")
    }
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": definitions,
        "rows": rows,
    }
