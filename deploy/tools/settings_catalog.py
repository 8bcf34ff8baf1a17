"""The environment variables each service reads, derived from its pydantic-settings model.

Used by `config_table.py`, `values_schema.py` and the deploy tests (runs in the main `.venv`).
A setting is a leaf of the model: nested `BaseModel` groups are joined with `__` (the services'
`env_nested_delimiter`) under the `LAZYLOAD_` prefix, e.g. `LAZYLOAD_NATS__URL`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

PREFIX = "LAZYLOAD_"
DELIMITER = "__"

# service (compose / chart name) -> (settings module, settings class, console script)
SERVICES: dict[str, tuple[str, str, str]] = {
    "accesslog-ingest": (
        "lazyload_accesslog_ingest.settings",
        "IngestSettings",
        "lazyload-accesslog-ingest",
    ),
    "fence-reconciler": (
        "lazyload_fence_reconciler.settings",
        "ReconcilerSettings",
        "lazyload-fence-reconciler",
    ),
    "sidecar-writer": (
        "lazyload_sidecar_writer.settings",
        "WriterSettings",
        "lazyload-sidecar-writer",
    ),
    "global-pilot": (
        "lazyload_global_pilot.settings",
        "GlobalPilotSettings",
        "lazyload-global-pilot",
    ),
}


@dataclass(frozen=True)
class Setting:
    path: tuple[str, ...]  # ("nats", "url")
    annotation: Any
    default: Any  # a value, or the string "(computed)"
    description: str

    @property
    def env(self) -> str:
        return PREFIX + DELIMITER.join(p.upper() for p in self.path)


def settings_class(service: str) -> type[BaseModel]:
    module, cls, _ = SERVICES[service]
    return getattr(importlib.import_module(module), cls)


def walk(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[Setting]:
    """Every leaf setting of `model`, groups recursed into (`model_fields`, `__` joined)."""
    out: list[Setting] = []
    for name, field in model.model_fields.items():
        path = (*prefix, name)
        group = field.annotation
        if isinstance(group, type) and issubclass(group, BaseModel):
            out += walk(group, path)
            continue
        if field.default is not PydanticUndefined:
            default = field.default
        elif field.default_factory in (list, tuple, dict):
            default = field.default_factory()
        else:
            default = "(computed)"
        out.append(Setting(path, field.annotation, default, field.description or ""))
    return out


def settings(service: str) -> list[Setting]:
    return walk(settings_class(service))


def env_names(service: str) -> set[str]:
    """Every `LAZYLOAD_*` variable the service's settings model reads."""
    return {s.env for s in settings(service)}
