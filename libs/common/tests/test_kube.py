"""Errors of the Kubernetes API as `lazyload_common.kube` types them (faults the emulator
injects): a throttled answer carries the server's Retry-After."""

from __future__ import annotations

import pytest
from lazyload_common import kube


def test_a_throttled_answer_carries_the_servers_retry_after(kube_emulator) -> None:  # type: ignore[no-untyped-def]
    api = kube.KubeApi(kube_emulator.api_client())
    kube_emulator.inject_fault("POST", r"/configmaps$", status=429, count=1, retry_after=7)
    with pytest.raises(kube.KubeTooManyRequests) as throttled:
        api.create("/api/v1/namespaces/default/configmaps", {"metadata": {"name": "x"}})
    assert throttled.value.retry_after == 7.0
    kube_emulator.inject_fault("POST", r"/configmaps$", status=500, count=1)
    with pytest.raises(kube.KubeServerError) as failed:
        api.create("/api/v1/namespaces/default/configmaps", {"metadata": {"name": "x"}})
    assert failed.value.retry_after is None
