"""`runtime.Runtime`, the start-up and shutdown every service shares: the admin app answers at
once and reports the named checks; the parts stop in the reverse order of their start, the guarded
tasks as one part at the place of the last one started (draining ones finish before the rest are
cancelled), the admin app last; a fatal task stops the service as a failure; NATS against a real
nats-server (streams made, readiness, closed at shutdown)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from lazyload_common import runtime, subjects, tasks
from lazyload_common.settings import AdminSettings, NatsSettings

ADMIN = AdminSettings(host="127.0.0.1", port=0)


async def test_parts_stop_in_reverse_order_with_the_tasks_at_the_last_ones_place() -> None:
    order: list[str] = []
    stop = asyncio.Event()

    async def consumer() -> None:  # finishes its batch once stopping
        await stop.wait()
        await asyncio.sleep(0.05)
        order.append("consumer drained")

    async def worker() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            order.append("worker cancelled")
            raise

    async def close_async() -> None:
        order.append("nats")

    async with runtime.Runtime("test", ADMIN, checks=("a",), stop=stop) as rt:
        port = rt.admin_port
        rt.on_stop(lambda: order.append("sink"))
        rt.task(worker(), name="probe")
        rt.on_stop(close_async)
        rt.task(consumer(), name="consumer", drain=5)
        rt.task(worker(), name="worker")
        rt.on_stop(lambda: order.append("listener"))
        stop.set()
        await rt.stopped()
        async with httpx.AsyncClient() as http:  # still answering until the very end
            assert (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
    assert order == [
        "listener",
        "consumer drained",
        "worker cancelled",
        "worker cancelled",
        "nats",
        "sink",
    ]
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{port}/healthz")


async def test_readiness_waits_for_every_check_and_ready_only_while_running() -> None:
    ready = asyncio.Event()
    async with runtime.Runtime(
        "test", ADMIN, checks=("sink", "nats"), informational=("nats",), ready=ready
    ) as rt:
        url = f"http://127.0.0.1:{rt.admin_port}/readyz"
        async with httpx.AsyncClient() as http:
            first = await http.get(url)
            assert first.status_code == 503
            assert first.json()["checks"] == {"sink": False, "nats": False}
            rt.check("sink", lambda: True)
            assert (await http.get(url)).status_code == 200  # nats only informs
        with pytest.raises(ValueError, match="no readiness check 'kube'"):
            rt.check("kube", lambda: True)
        rt.ready("up")
        assert ready.is_set()
    later = asyncio.Event()
    async with runtime.Runtime("test", ADMIN, checks=(), ready=later) as rt:
        rt.stop.set()
        assert await rt.until(asyncio.Event().wait()) is False
        rt.ready()
    assert not later.is_set()


async def test_a_fatal_task_stops_the_service_as_a_failure_and_a_failed_stop_is_passed() -> None:
    stopped: list[str] = []

    async def lost() -> None:
        raise RuntimeError("consumer lost")

    def broken() -> None:
        raise OSError("already closed")

    async with runtime.Runtime("test", ADMIN, checks=()) as rt:
        rt.on_stop(lambda: stopped.append("first"))
        rt.on_stop(broken)
        rt.task(lost(), name="consumer")
        await asyncio.wait_for(rt.stopped(), 5)
    assert isinstance(rt.stop, tasks.Stop)
    assert rt.stop.failure == "task consumer failed: RuntimeError('consumer lost')"
    assert stopped == ["first"]


async def test_nats_is_connected_with_its_streams_and_closed_at_shutdown(nats_url: str) -> None:
    async with runtime.Runtime("test", ADMIN, checks=("nats",)) as rt:
        nc = await rt.connect_nats(NatsSettings(url=nats_url), streams=[subjects.DEPS_STREAM])
        assert rt.readiness() == {"nats": True}
        info = await rt.js.stream_info(subjects.DEPS_STREAM)
        assert info.config.name == subjects.DEPS_STREAM
        await rt.js.delete_stream(subjects.DEPS_STREAM)
        await rt.ensure_streams()  # again, after the server lost it
        assert (await rt.js.stream_info(subjects.DEPS_STREAM)).config.name == subjects.DEPS_STREAM
    assert nc.is_closed
