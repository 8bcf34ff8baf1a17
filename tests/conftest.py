"""Cross-service fixtures: the whole stack, started the way `lazyload up` starts it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from lazyload_cli.stack import Stack, StackConfig


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """nats-server, the Kubernetes API emulator, the four services and a global-sidecar Envoy."""
    state_dir: Path = tmp_path_factory.mktemp("stack")
    with Stack(StackConfig(state_dir=state_dir, log_level="DEBUG")) as running:
        yield running
