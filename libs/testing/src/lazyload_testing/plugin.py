"""pytest plugin of lazyload: fixtures that start real components on random ports.

Loaded by the root pytest config (`-p lazyload_testing.plugin`). Tests never reach a user's
cluster: `LAZYLOAD_KUBE__KUBECONFIG` and `KUBECONFIG` are cleared, so only the kubeconfigs of the
servers the fixtures start (the emulator, or etcd + kube-apiserver on loopback) are ever used.
"""

from __future__ import annotations

import importlib
import inspect
import os

import pytest

os.environ.pop("LAZYLOAD_KUBE__KUBECONFIG", None)
os.environ.pop("KUBECONFIG", None)

_FIXTURE_MODULES = (
    "lazyload_testing.nats",
    "lazyload_testing.kube",
    "lazyload_testing.kube_real",
    "lazyload_testing.envoy",
    "lazyload_testing.mesh",
    "lazyload_testing.hygiene",
)


def _load_fixtures() -> dict[str, object]:
    found: dict[str, object] = {}
    for name in _FIXTURE_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        for attr in dir(module):
            value = getattr(module, attr)
            if (
                hasattr(value, "_fixture_function_marker")
                or type(value).__name__ == "FixtureFunctionDefinition"
            ):
                found[attr] = value
    return found


globals().update(_load_fixtures())


def pytest_report_header() -> str:
    from lazyload_testing.kube_real import kube_mode

    return f"Kubernetes API of the integration tests (LAZYLOAD_TEST_KUBE): {kube_mode()}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run e2e tests last: they are the slowest and depend on everything else. Every coroutine
    test gets `no_leaked_tasks` first (so torn down last). Without the real control plane's
    binaries (no Go), the `real` tests are deselected, and the run says so."""
    from lazyload_cli.kube_real import KubeBinaries

    from lazyload_testing.kube import repo_root

    for item in items:
        if not isinstance(item, pytest.Function) or not inspect.iscoroutinefunction(item.obj):
            continue
        if "no_leaked_tasks" not in item.fixturenames:
            item.fixturenames.insert(0, "no_leaked_tasks")
    items.sort(key=lambda item: item.get_closest_marker("e2e") is not None)
    if KubeBinaries.available(repo_root()):
        return
    real = [item for item in items if item.get_closest_marker("real")]
    if real:
        config.hook.pytest_deselected(items=real)
        items[:] = [item for item in items if not item.get_closest_marker("real")]
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                f"{len(real)} tests need kube-apiserver and etcd (`make setup` builds them with "
                "Go, or set KUBEBUILDER_ASSETS): deselected",
                yellow=True,
            )
