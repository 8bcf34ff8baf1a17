"""Every `LAZYLOAD_*` variable lazyload itself sets is accepted at start-up by every service.

The services refuse a `LAZYLOAD_*` variable that names no setting (a misspelt one used to be
ignored). One environment may reach several services (`lazyload up` hands its own to all of
them), so what the compose file, the chart, `lazyload up`, the Makefile, the tests' and the
benchmarks' code set or read must pass every service's check, and `lazyload_common.settings`
must know every service's settings (`SERVICE_SETTINGS`) and every tool's variable.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from deploy_support import ROOT, tool
from lazyload_common import settings, subjects

SERVICES = ("accesslog-ingest", "fence-reconciler", "sidecar-writer", "global-pilot")
_NAME = re.compile(r"\bLAZYLOAD_[A-Z0-9_]*[A-Z0-9]\b")
SOURCES = (
    "Makefile",
    "docker-compose.yml",
    "deploy/compose",
    "deploy/helm/lazyload/templates",
    "cli/src",
    "libs/testing/src",
    "tests/conftest.py",
    "tests/e2e",
    "bench",
)
"""Where lazyload's tools set or read environment variables (the services' own tests set
deliberately wrong ones)."""
NOT_VARIABLES = set(subjects.STREAM_SUBJECTS) | {"LAZYLOAD_GLOBAL_SIDECAR"}
"""`LAZYLOAD_*` words that are no variables: stream names, the global-sidecar's node marker."""


def _models() -> dict[str, type]:
    return {s: tool("settings_catalog").settings_class(s) for s in SERVICES}


def test_every_service_setting_is_known_to_the_others() -> None:
    tops = {name for model in _models().values() for name in model.model_fields}
    assert tops == settings.SERVICE_SETTINGS


def _files() -> list[Path]:
    found: list[Path] = []
    for source in SOURCES:
        path = ROOT / source
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found += [p for p in sorted(path.rglob("*")) if p.is_file() and p.suffix != ".pyc"]
    return found


def _variables() -> set[str]:
    names: set[str] = set()
    for path in _files():
        try:
            names |= set(_NAME.findall(path.read_text()))
        except UnicodeDecodeError:
            continue
    return names - NOT_VARIABLES


@pytest.mark.parametrize("service", SERVICES)
def test_what_the_tools_set_passes_every_service(service: str) -> None:
    variables = _variables()
    assert {"LAZYLOAD_NATS__URL", "LAZYLOAD_ENVOY_BIN", "LAZYLOAD_UP_NATS_PORT"} <= variables
    unknown = settings.unknown_variables(_models()[service], dict.fromkeys(variables, "x"))
    assert unknown == [], f"{service} would refuse to start: {unknown}"


@pytest.mark.parametrize("service", SERVICES)
def test_the_environment_of_lazyload_up_passes_every_service(service: str, tmp_path: Path) -> None:
    from lazyload_cli import stack

    config = stack.StackConfig(state_dir=tmp_path, extra_env={"LAZYLOAD_KUBE__QPS": "1000"})
    up = stack.Stack(config)
    shared = {k: v for name in stack.SERVICES for k, v in up._service_env(name).items()}
    assert settings.unknown_variables(_models()[service], shared | config.extra_env) == []
