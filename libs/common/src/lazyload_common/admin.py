"""The admin HTTP app every service serves: /healthz, /readyz, /metrics, plus service routers.

`/readyz` answers 200 only when every gating dependency check passes (NATS connected, API synced,
gRPC listening...), with the state of each in the body (informational checks are shown but do
not gate); `/metrics` is Prometheus text.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping

import uvicorn
from fastapi import APIRouter, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Gauge, generate_latest

ReadinessCheck = Callable[[], Mapping[str, bool]]

ASYNCIO_TASKS = Gauge(
    "lazyload_asyncio_tasks",
    "asyncio tasks of the service's event loop not done yet (read at scrape time); flat under "
    "a steady load, a steady rise is a task leak",
)


class Readiness(dict[str, Callable[[], bool]]):
    """A service's named readiness checks, set as its parts come up (`state["nats"] = ...`);
    called, the state of each: a check not set yet counts as not ready. `informational` checks
    are reported but never make the service unready (e.g. accesslog-ingest keeps taking access
    logs into its buffer while NATS is away: unready, it would leave its Service)."""

    def __init__(self, names: Iterable[str], *, informational: Iterable[str] = ()) -> None:
        super().__init__()
        self.names = tuple(names)
        self.informational = frozenset(informational)

    def ready(self, checks: Mapping[str, bool]) -> bool:
        gating = [ok for name, ok in checks.items() if name not in self.informational]
        return bool(gating) and all(gating)

    def __call__(self) -> dict[str, bool]:
        return {name: self[name]() if name in self else False for name in self.names}


def create_admin_app(
    service: str,
    *,
    readiness: ReadinessCheck,
    routers: Iterable[APIRouter] = (),
    docs: bool = False,
) -> FastAPI:
    """A FastAPI app with the health, readiness and metrics endpoints of `service`; `docs` serves
    /docs and /openapi.json (off by default: they map the API for anyone on the network)."""
    app = FastAPI(
        title=f"lazyload {service} admin",
        docs_url="/docs" if docs else None,
        openapi_url="/openapi.json" if docs else None,
        redoc_url=None,
    )

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok", "service": service}

    @app.get("/readyz")
    def readyz(response: Response) -> dict[str, object]:
        checks = dict(readiness())
        if isinstance(readiness, Readiness):
            ready = readiness.ready(checks)
        else:
            ready = bool(checks) and all(checks.values())
        response.status_code = 200 if ready else 503
        return {"ready": ready, "checks": checks, "service": service}

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    for router in routers:
        app.include_router(router)
    return app


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind a listening TCP socket now (port 0 = a free port), so the port is known before serving."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the service's `run_main` owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class AdminServer:
    """Serves an ASGI app with uvicorn inside the running event loop."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        self._sock = bind_socket(host, port)
        self.port: int = self._sock.getsockname()[1]
        self.host = host
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        ASYNCIO_TASKS.set_function(lambda: len(asyncio.all_tasks(loop)))
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]), name="admin")
        while not self._server.started and not self._task.done():
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, timeout=5)
        self._sock.close()
