"""Shared builders of the sidecar-writer tests: fence events and settings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from lazyload_common import events
from lazyload_sidecar_writer.settings import WriterSettings

FenceFactory = Callable[..., events.FenceChanged]


def make_fence(**overrides: Any) -> events.FenceChanged:
    values: dict[str, Any] = {
        "namespace": "default",
        "name": "productpage",
        "uid": "uid-productpage",
        "revision": 1,
        "workload_selector": {"app": "productpage"},
        "hosts": ["details.default.svc.cluster.local", "reviews.default.svc.cluster.local"],
    }
    values.update(overrides)
    return events.FenceChanged(**values)


def make_settings(**sidecar: Any) -> WriterSettings:
    return WriterSettings.model_validate({"sidecar": sidecar})


@pytest.fixture
def fence() -> FenceFactory:
    return make_fence


@pytest.fixture
def settings() -> WriterSettings:
    return make_settings()
