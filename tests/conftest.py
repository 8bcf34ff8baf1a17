"""Cross-service fixtures: the whole stack, started the way `lazyload up` starts it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from lazyload_cli.stack import Stack, StackConfig
from lazyload_testing.kube_real import kube_mode


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """nats-server, the run's Kubernetes API (`LAZYLOAD_TEST_KUBE`: etcd + kube-apiserver, or the
    emulator), the four services and a global-sidecar Envoy."""
    state_dir: Path = tmp_path_factory.mktemp("stack")
    config = StackConfig(state_dir=state_dir, log_level="DEBUG", kube=kube_mode())
    with Stack(config) as running:
        yield running
