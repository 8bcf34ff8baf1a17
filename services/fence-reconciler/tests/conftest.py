"""Fixtures of the fence-reconciler tests: a Kubernetes API server, JetStream, and a running
reconciler (`app.run` in a task, waited for through its `ready` event).

The API server (`kube_server`) is lazyload_testing's `kube_cluster` - the real kube-apiserver
under `make test`, or the emulator with `LAZYLOAD_TEST_KUBE=emulator` - except for a test that
asks for `kube_emulator` itself (it injects faults): then the fixtures use that emulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from lazyload_common import codec, events, jetstream, kube, settings, subjects
from lazyload_fence_reconciler import app
from lazyload_fence_reconciler.settings import FenceSettings, ReconcilerSettings
from lazyload_testing import waiting
from nats.js import JetStreamContext

FENCES = "/apis/microservice.slime.io/v1alpha1/namespaces/{ns}/servicefences"
ADMIN_TOKEN = "test-admin-token"


@pytest.fixture
def kube_server(request: pytest.FixtureRequest) -> Any:
    """`kube_emulator` or `real_kube` for a test that asks for it (fault injection, what only a
    real server does), else `kube_cluster`."""
    names = request.fixturenames
    wanted = next((n for n in ("kube_emulator", "real_kube") if n in names), "kube_cluster")
    return request.getfixturevalue(wanted)


@pytest.fixture
def kube_api(kube_server: Any) -> kube.KubeApi:
    return kube.KubeApi(kube_server.api_client())


@pytest.fixture
async def js(nats_url: str) -> AsyncIterator[JetStreamContext]:
    nc = await jetstream.connect(settings.NatsSettings(url=nats_url), name="test")
    context = nc.jetstream()
    await jetstream.ensure_streams(context)
    yield context
    await nc.close()


@dataclass
class Runner:
    """Starts and stops fence-reconciler processes (as tasks) against the test servers."""

    settings: ReconcilerSettings
    admin_token: str = ADMIN_TOKEN
    running: list[tuple[asyncio.Task[None], asyncio.Event]] = field(default_factory=list)
    admin_port: int = 0

    async def start(self, **fence: Any) -> None:
        config = self.settings
        if fence:
            merged = {**self.settings.fence.model_dump(), **fence}
            config = self.settings.model_copy(update={"fence": FenceSettings(**merged)})
        stop, ready = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(
            app.run(config, stop=stop, ready=ready, on_bound=self._bound), name="reconciler"
        )
        self.running.append((task, stop))
        waiting = asyncio.create_task(ready.wait())
        await asyncio.wait({task, waiting}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
        if not ready.is_set():
            waiting.cancel()
            if task.done():
                task.result()
            raise AssertionError("fence-reconciler did not become ready")

    def _bound(self, port: int) -> None:
        self.admin_port = port

    async def stop(self) -> None:
        while self.running:
            task, stop = self.running.pop()
            stop.set()
            await asyncio.wait_for(task, timeout=20)


@pytest.fixture
async def reconciler(nats_url: str, kube_server: Any, tmp_path: Path) -> AsyncIterator[Runner]:
    """A reconciler runner; its admin API takes the bearer token `runner.admin_token`."""
    token_file = tmp_path / "admin-token"
    token_file.write_text(ADMIN_TOKEN)
    config = ReconcilerSettings(
        nats=settings.NatsSettings(url=nats_url),
        kube=settings.KubeSettings(kubeconfig=kube_server.kubeconfig),
        admin=settings.AdminSettings(host="127.0.0.1", port=0, auth="token", token_file=token_file),
        # eager=False: most tests follow a fence from its first dependency; test_auto_fence covers
        # the default (every selected Service fenced before any traffic)
        # learn_unknown_services: the flows publish edges to hosts without creating their
        # Services; test_admission and test_unknown_services cover the default (dropped)
        fence=FenceSettings(
            resync_interval=0,
            missing_service_delay=0.2,
            eager=False,
            learn_unknown_services=True,
        ),
    )
    runner = Runner(config)
    yield runner
    await runner.stop()


def edge(
    host: str, *, ns: str = "default", name: str = "productpage", port: int | None = 9080
) -> events.DependencyObserved:
    now = time.time()
    return events.DependencyObserved(
        source_namespace=ns,
        source_name=name,
        destination_host=host,
        destination_port=port,
        first_seen=now,
        observed_at=now,
    )


class FenceEvents:
    """Every FenceChanged of the stream, read by an ordered consumer."""

    def __init__(self, js: JetStreamContext, subject: str = f"{subjects.FENCE_PREFIX}.>") -> None:
        self.js, self.subject = js, subject
        self.seen: list[events.FenceChanged] = []
        self._sub: Any = None

    async def __aenter__(self) -> FenceEvents:
        self._sub = await self.js.subscribe(self.subject, ordered_consumer=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()

    async def until(
        self, predicate: Callable[[events.FenceChanged], bool], timeout: float = 10.0
    ) -> events.FenceChanged:
        for event in self.seen:
            if predicate(event):
                return event
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = await self._sub.next_msg(timeout=left)
            except Exception:
                break
            event = codec.decode_as(msg.data, events.FenceChanged)
            self.seen.append(event)
            if predicate(event):
                return event
        raise AssertionError(f"no matching fence event in {timeout}s; seen {self.seen}")

    async def drain(self, quiet: float = 0.5) -> list[events.FenceChanged]:
        """Read until nothing comes for `quiet` seconds; every event seen so far."""
        while True:
            try:
                msg = await self._sub.next_msg(timeout=quiet)
            except Exception:
                return self.seen
            self.seen.append(codec.decode_as(msg.data, events.FenceChanged))


@dataclass
class Kit:
    """Test helpers bound to this test's servers (a fixture: conftest is not importable)."""

    api: kube.KubeApi
    js: JetStreamContext
    env: Any

    edge = staticmethod(edge)

    def events(self, subject: str = f"{subjects.FENCE_PREFIX}.>") -> FenceEvents:
        return FenceEvents(self.js, subject)

    async def publish(self, *edges: events.DependencyObserved) -> None:
        for e in edges:
            await jetstream.publish(self.js, subjects.deps(e.source_namespace, e.source_name), e)

    def create_service(
        self,
        name: str,
        *,
        ns: str = "default",
        labels: dict[str, str] | None = None,
        selector: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        body = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
            "spec": {
                "selector": {"app": name} if selector is None else selector,
                "ports": [{"port": 9080}],
            },
        }
        return self.api.create(f"/api/v1/namespaces/{ns}/services", body)

    def fence(self, name: str, ns: str = "default") -> dict[str, Any] | None:
        try:
            return self.api.get(FENCES.format(ns=ns) + f"/{name}")
        except kube.KubeNotFound:
            return None

    def fence_writes(self) -> list[Any]:
        return self.env.writes("/servicefences")

    async def dead_letters(self) -> Any:
        return await self.js.subscribe(
            subjects.dead_letter("fence-reconciler"), ordered_consumer=True
        )

    eventually = staticmethod(waiting.eventually)


@pytest.fixture
def kit(kube_api: kube.KubeApi, js: JetStreamContext, kube_server: Any) -> Kit:
    return Kit(kube_api, js, kube_server)
