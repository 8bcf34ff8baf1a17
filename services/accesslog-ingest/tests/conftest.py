"""Fixtures of the accesslog-ingest tests: the sample Service index, a running ingest (real gRPC
server + real nats-server, index fed directly), and a NATS client to read JetStream back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import nats
import pytest
from lazyload_accesslog_ingest import app, indexing
from lazyload_accesslog_ingest.settings import IngestSettings
from lazyload_testing import ingest as t
from lazyload_testing.nats import NatsServer
from nats.aio.client import Client as NATS


@pytest.fixture
def index() -> indexing.ServiceIndex:
    return t.sample_index()


@pytest.fixture
async def observer(nats_server: NatsServer) -> AsyncIterator[NATS]:
    """A plain NATS client of the test, to read the streams."""
    nc = await nats.connect(nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    yield nc
    await nc.close()


def make_settings(nats_url: str, **overrides: Any) -> IngestSettings:
    values: dict[str, Any] = {
        "nats": {"url": nats_url, "connect_timeout": 2.0},
        "admin": {"host": "127.0.0.1", "port": 0},
        "grpc": {"host": "127.0.0.1", "port": 0, "shutdown_grace": 0.2},
        "publish": {"drain_timeout": 0.5},
        "reporter": "test-ingest",
    }
    for group, value in overrides.items():
        if isinstance(value, dict):
            values[group] = {**values.get(group, {}), **value}
        else:
            values[group] = value
    return IngestSettings(**values)


@dataclass
class RunningIngest:
    settings: IngestSettings
    ports: app.BoundPorts
    stop: asyncio.Event
    task: asyncio.Task[None]

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.ports.grpc}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.admin}"


@pytest.fixture
async def start_ingest(
    nats_server: NatsServer, index: indexing.ServiceIndex
) -> AsyncIterator[Callable[..., Awaitable[RunningIngest]]]:
    """Start `app.run` with the fixture's index; stopped at teardown."""
    started: list[RunningIngest] = []

    async def start(**overrides: Any) -> RunningIngest:
        settings = make_settings(nats_server.url, **overrides)
        stop, ready = asyncio.Event(), asyncio.Event()
        bound: list[app.BoundPorts] = []
        task = asyncio.create_task(
            app.run(settings, stop=stop, ready=ready, on_bound=bound.append, index=index)
        )
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait({task, waiter}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
        if not ready.is_set():
            waiter.cancel()
            stop.set()
            await task  # raises the start-up error, if any
            pytest.fail("ingest did not become ready")
        running = RunningIngest(settings, bound[0], stop, task)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop.set()
        await asyncio.wait_for(running.task, timeout=15)
