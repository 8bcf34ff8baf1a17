"""Helpers of the deploy tests: the deploy/tools scripts and the `.venv-helm` interpreter."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

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
