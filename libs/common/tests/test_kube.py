"""Errors of the Kubernetes API as `lazyload_common.kube` types them (faults the emulator
injects): a throttled answer carries the server's Retry-After; the async client's errors are the
permanent/temporary errors the consume loops act on (a refused body permanent, a 403 temporary
with the denied delay, a 503 after its Retry-After, no answer at all `KubeUnreachable`); its
async calls and its blocking threads take their tokens from one rate limit."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest
from kubernetes import client as k8s_client
from lazyload_common import errors, kube


def test_a_throttled_answer_carries_the_servers_retry_after(kube_emulator) -> None:
    api = kube.KubeApi(kube_emulator.api_client())
    kube_emulator.inject_fault("POST", r"/configmaps$", status=429, count=1, retry_after=7)
    with pytest.raises(kube.KubeTooManyRequests) as throttled:
        api.create("/api/v1/namespaces/default/configmaps", {"metadata": {"name": "x"}})
    assert throttled.value.retry_after == 7.0
    kube_emulator.inject_fault("POST", r"/configmaps$", status=500, count=1)
    with pytest.raises(kube.KubeServerError) as failed:
        api.create("/api/v1/namespaces/default/configmaps", {"metadata": {"name": "x"}})
    assert failed.value.retry_after is None


async def test_the_async_client_types_every_failure_for_the_consume_loop(kube_emulator) -> None:
    client = kube.AsyncKube(kube_emulator.api_client(), qps=100, burst=10)
    path = "/api/v1/namespaces/default/configmaps"
    body = {"metadata": {"name": "x"}}
    kube_emulator.inject_fault("POST", r"/configmaps$", status=422, count=1)
    with pytest.raises(kube.KubeUnprocessable) as refused:
        await client.create(path, body)
    assert isinstance(refused.value, errors.PermanentError)
    assert not kube.is_retryable(refused.value)
    kube_emulator.inject_fault("POST", r"/configmaps$", status=403, count=1)
    with pytest.raises(errors.TemporaryError) as denied:
        await client.create(path, body)
    assert isinstance(denied.value, kube.KubeDenied) and denied.value.delay == kube.DENIED_DELAY
    assert not kube.is_retryable(denied.value)  # redelivered later, not retried in place
    kube_emulator.inject_fault("POST", r"/configmaps$", status=503, count=1, retry_after=7)
    with pytest.raises(kube.KubeServerError) as failed:
        await client.create(path, body)
    assert failed.value.delay == 7.0 and kube.is_retryable(failed.value)
    await client.create(path, body)
    with pytest.raises(kube.KubeConflict) as exists:
        await client.create(path, body)
    assert isinstance(exists.value, errors.TemporaryError) and kube.is_retryable(exists.value)
    client.close()


async def test_no_answer_is_typed_unreachable_and_retryable() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    configuration = k8s_client.Configuration()
    configuration.host = f"http://127.0.0.1:{port}"
    configuration.retries = 0
    client = kube.AsyncKube(k8s_client.ApiClient(configuration), timeout=2)
    with pytest.raises(kube.KubeUnreachable) as unreachable:
        await client.get("/api/v1/namespaces")
    assert unreachable.value.status == 0 and isinstance(unreachable.value, errors.TemporaryError)
    assert kube.is_retryable(unreachable.value)
    client.close()


async def test_async_calls_and_blocking_threads_share_one_rate_limit(kube_emulator) -> None:
    qps, burst = 20.0, 2
    client = kube.AsyncKube(kube_emulator.api_client(), qps=qps, burst=burst)
    kube_emulator.clear_requests()
    await asyncio.gather(
        *(client.get("/api/v1/namespaces/default") for _ in range(4)),
        *(client.run(client.blocking.get, "/api/v1/namespaces/default") for _ in range(4)),
    )
    times = sorted(r.time for r in kube_emulator.requests())
    assert len(times) == 8
    # 8 requests at 20/s after a burst of 2: the last one is at least 6/20 s after the first
    for k, t in enumerate(times):
        assert t - times[0] >= (k + 1 - burst) / qps - 0.02, (k, t - times[0])
    client.close()


async def test_the_client_keeps_its_threads_calls_in_flight() -> None:
    """Ten blocking calls run at once in a client of ten threads: more than the event loop's
    default pool (CPU count + 4) lets through on this machine."""
    barrier = threading.Barrier(10, timeout=5)
    client = kube.AsyncKube(k8s_client.ApiClient(), threads=10)
    # BrokenBarrierError unless the ten are in flight together
    assert await asyncio.gather(*(client.run(barrier.wait) for _ in range(10)))
    client.close()
