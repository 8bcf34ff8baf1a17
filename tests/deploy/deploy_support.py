"""Helpers of the deploy tests: the deploy/tools scripts and the `.venv-helm` interpreter."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

import pytest

if TYPE_CHECKING:
    from kubernetes.client import V1ObjectMeta

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / "deploy" / "tools"
CHART = ROOT / "deploy" / "helm" / "lazyload"
HELM_PYTHON = ROOT / ".venv-helm" / "bin" / "python"


def tool(name: str) -> ModuleType:
    """Import deploy/tools/<name>.py (they are scripts, not a package)."""
    if str(TOOLS) not in sys.path:
        sys.path.insert(0, str(TOOLS))
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def helm_python() -> Path:
    if not HELM_PYTHON.exists():
        pytest.fail(
            f"{HELM_PYTHON} is missing: run `make setup` (it creates .venv-helm with "
            "helm-python-sdk, kubernetes-validate and check-jsonschema)",
            pytrace=False,
        )
    return HELM_PYTHON


def helm_tool(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(helm_python()), str(TOOLS / "helm_chart.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    if check and result.returncode != 0:
        pytest.fail(f"helm_chart.py {args[0]} failed:\n{result.stdout}\n{result.stderr}")
    return result


def values_file(tmp_path: Path, values: dict[str, Any] | None, name: str = "values") -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(values or {}))
    return str(path)


# ---- applying rendered objects to the Kubernetes API emulator (official client) -----------

RBAC_KINDS = {"ServiceAccount", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}
# kind -> the API class of the official client with its create_ and read_ methods.
_APIS = {
    "Namespace": "CoreV1Api",
    "ServiceAccount": "CoreV1Api",
    "ConfigMap": "CoreV1Api",
    "Service": "CoreV1Api",
    "Role": "RbacAuthorizationV1Api",
    "RoleBinding": "RbacAuthorizationV1Api",
    "ClusterRole": "RbacAuthorizationV1Api",
    "ClusterRoleBinding": "RbacAuthorizationV1Api",
}


def _call(api: Any, obj: dict[str, Any], verb: str, *args: Any) -> Any:
    """The official client's `<verb>_[namespaced_]<kind in snake case>` for `obj`, called."""
    from kubernetes import client

    kind = re.sub(r"(?<!^)(?=[A-Z])", "_", obj["kind"]).lower()  # ClusterRole: cluster_role
    namespace = obj["metadata"].get("namespace")
    scope = "namespaced_" if namespace else ""
    method = getattr(getattr(client, _APIS[obj["kind"]])(api), f"{verb}_{scope}{kind}")
    if not namespace:
        return method(*args)
    # create_namespaced_x(namespace, body); read_namespaced_x(name, namespace)
    return method(namespace, *args) if verb == "create" else method(*args, namespace)


class _Stored(Protocol):
    @property
    def metadata(self) -> V1ObjectMeta | None: ...


def name_of(obj: _Stored) -> str:
    """`metadata.name` of an object the official client read (optional in its model; the API
    server always sets it)."""
    assert obj.metadata is not None and obj.metadata.name is not None, obj
    return obj.metadata.name


def apply_rendered(api: Any, objects: list[dict[str, Any]], kinds: set[str]) -> dict[str, int]:
    """Create the rendered objects of `kinds` (and any namespace they need) through the official
    client; returns how many of each kind."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    existing = {name_of(n) for n in core.list_namespace().items}
    counts: dict[str, int] = {}
    for obj in objects:
        if obj["kind"] not in kinds:
            continue
        namespace = obj["metadata"].get("namespace")
        if namespace and namespace not in existing:
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
            existing.add(namespace)
        _call(api, obj, "create", obj)
        counts[obj["kind"]] = counts.get(obj["kind"], 0) + 1
    return counts


def read_back(api: Any, obj: dict[str, Any]) -> dict[str, Any]:
    """The stored object (as a plain dict in API field names) for a rendered one."""
    stored = _call(api, obj, "read", obj["metadata"]["name"])
    return api.sanitize_for_serialization(stored)
