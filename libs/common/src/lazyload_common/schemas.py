"""Istio's own schema for the `networking.istio.io` objects lazyload writes: sidecar-writer's
Sidecars, global-pilot's EnvoyFilters and DestinationRules.

The schema is Istio's, as generated pydantic models (`cloudcoil-models-istio`, a dependency of the
services that validate; this module imports it only when asked). `problems(obj)` lists where an
object differs from the schema of its apiVersion and kind: what the model refuses, every field it
does not know (pydantic would drop it silently) and every value it reads differently (a `"80"`
where a number belongs): an object Istio would not read as written. Empty when it conforms.

Building the models takes seconds of CPU, and `cloudcoil.models.istio` builds every Istio CRD of
every version when its package is imported (networking v1, v1beta1, v1alpha3, security, telemetry,
extensions): ~2.5 s of CPU at each start. So only the module of the version asked for is loaded
(`model`, cached), from its file, without the package `__init__`s; a service warms the versions it
writes up at start-up (`warm_up`).
"""

from __future__ import annotations

import functools
import importlib.util
import sys
import threading
from typing import Any

from pydantic import ValidationError

GROUP = "networking.istio.io"
VERSIONS = ("v1", "v1beta1", "v1alpha3")
_PACKAGE = "cloudcoil.models.istio.networking"
_loading = threading.Lock()


@functools.cache
def _module(version: str) -> Any:
    """The generated models of `networking.istio.io/<version>`, loaded from the version's file
    under its own name, so the package `__init__`s do not run; a later import of the package
    finds this module in `sys.modules` and reuses it."""
    name = f"{_PACKAGE}.{version}"
    with _loading:
        module = sys.modules.get(name)
        if module is not None:
            return module
        import cloudcoil

        root = cloudcoil.__path__[0]
        spec = importlib.util.spec_from_file_location(
            name, f"{root}/models/istio/networking/{version}.py"
        )
        if spec is None or spec.loader is None:  # not installed as files: the usual way
            return importlib.import_module(name)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        return module


def model(api_version: str, kind: str) -> Any:
    """The model of `kind` at `api_version` (`networking.istio.io/<version>`), or None when
    there is none."""
    group, _, version = api_version.partition("/")
    if group != GROUP or version not in VERSIONS:
        return None
    return getattr(_module(version), kind, None)


def warm_up(api_version: str, *kinds: str) -> None:
    """Build the models of `kinds` now (blocking, seconds) rather than at the first check."""
    for kind in kinds:
        model(api_version, kind)


def problems(obj: dict[str, Any]) -> list[str]:
    """Where `obj` differs from Istio's schema of its apiVersion and kind (empty: conforms)."""
    api_version, kind = str(obj.get("apiVersion", "")), str(obj.get("kind", ""))
    group, _, version = api_version.partition("/")
    if group != GROUP or version not in VERSIONS:
        return [f"unsupported apiVersion {api_version!r}"]
    schema = model(api_version, kind)
    if schema is None:
        return [f"no Istio schema for kind {kind!r} at {api_version}"]
    try:
        parsed = schema.model_validate(obj)
    except ValidationError as e:
        return [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()[:5]]
    dumped = parsed.model_dump(mode="json", by_alias=True, exclude_none=True)
    return _differences(obj, dumped, "")


def _differences(original: Any, dumped: Any, where: str) -> list[str]:
    """Paths of `original` the model did not keep (unknown fields) or keeps as another value."""
    if isinstance(original, dict) and isinstance(dumped, dict):
        found: list[str] = []
        for key, value in original.items():
            here = f"{where}.{key}" if where else str(key)
            if key not in dumped:
                found.append(f"{here}: unknown field")
            else:
                found += _differences(value, dumped[key], here)
        return found
    if isinstance(original, list) and isinstance(dumped, list) and len(original) == len(dumped):
        return [
            p
            for i, (o, d) in enumerate(zip(original, dumped, strict=True))
            for p in _differences(o, d, f"{where}[{i}]")
        ]
    if original == dumped and (
        type(original) is type(dumped)
        or (not isinstance(original, bool | str) and not isinstance(dumped, bool | str))
    ):
        return []  # the same value (1 and 1.0 are one number in JSON)
    return [f"{where}: read as {dumped!r}, not {original!r}"]
