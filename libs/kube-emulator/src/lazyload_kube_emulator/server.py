"""Serving the emulator: `EmulatorServer` on an asyncio loop, `run_in_thread` for sync callers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import uvicorn

from .admin_client import AdminClient
from .app import create_app
from .config import EmulatorConfig
from .emulator import Emulator
from .kubeconfig import kubeconfig_dict, write_kubeconfig

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling (the owner of the loop decides) that notices
    `request_exit()` at once instead of on its next 0.1 s tick."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._exit = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def request_exit(self) -> None:
        self.should_exit = True
        self._exit.set()

    async def main_loop(self) -> None:
        counter = 0
        while not await self.on_tick(counter):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exit.wait(), 1.0)
            counter += 10  # on_tick refreshes the Date header every 10 ticks


def bind_socket(host: str, port: int) -> socket.socket:
    """A bound socket (port 0 = a free port) handed to uvicorn, so there is no port race."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on connections accepted from a
    # socket with that proto, and without it every response waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class EmulatorServer:
    """The Kubernetes API emulator listening on host:port, run on the current asyncio loop."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        config: EmulatorConfig | None = None,
        emulator: Emulator | None = None,
        advertise_url: str | None = None,
    ) -> None:
        self.emulator = emulator or Emulator(config)
        self.host = host
        self.advertise_url = advertise_url
        self._requested_port = port
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None

    @property
    def port(self) -> int:
        if self._socket is None:
            raise RuntimeError("the emulator is not started")
        return self._socket.getsockname()[1]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Bind, serve in a background task and return once requests are accepted."""
        self._socket = bind_socket(self.host, self._requested_port)
        config = uvicorn.Config(
            create_app(self.emulator),
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        while not self._server.started:
            if self._task.done():
                await self._task
                raise RuntimeError("the Kubernetes API emulator failed to start")
            await asyncio.sleep(0.01)
        log.info("Kubernetes API emulator listening on %s", self.url)

    async def stop(self) -> None:
        """End watch streams, stop serving and wait for the server task."""
        if self._server is None or self._task is None:
            return
        self.emulator.store.events.close_all()
        self._server.request_exit()
        await self._task
        self._server = self._task = None
        if self._socket is not None:
            self._socket.close()
        log.info("Kubernetes API emulator stopped")

    @property
    def kubeconfig_url(self) -> str:
        """The server written into kubeconfigs: `advertise_url` if given, else `url`."""
        return self.advertise_url or self.url

    def write_kubeconfig(self, path: str | os.PathLike[str]) -> Path:
        return write_kubeconfig(self.kubeconfig_url, path)

    async def __aenter__(self) -> EmulatorServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class EmulatorHandle(AdminClient):
    """A running emulator in a background thread: its URL, kubeconfig and admin calls."""

    def __init__(self, server: EmulatorServer) -> None:
        super().__init__(server.url)
        self.server = server

    @property
    def emulator(self) -> Emulator:
        """The state object (touch it only from tests that know the loop is idle)."""
        return self.server.emulator

    @property
    def port(self) -> int:
        return self.server.port

    def kubeconfig_dict(self) -> dict[str, Any]:
        return kubeconfig_dict(self.server.kubeconfig_url)

    def write_kubeconfig(self, path: str | os.PathLike[str]) -> Path:
        return self.server.write_kubeconfig(path)


@contextlib.contextmanager
def run_in_thread(
    crds_dirs: Iterable[str | os.PathLike[str]] = (),
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    config: EmulatorConfig | None = None,
) -> Iterator[EmulatorHandle]:
    """Run an emulator on its own loop in a daemon thread for the duration of the block."""
    config = config or EmulatorConfig()
    dirs = (*config.crd_dirs, *(Path(d) for d in crds_dirs))
    server = EmulatorServer(host, port, config.model_copy(update={"crd_dirs": dirs}))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="kube-emulator", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=30)
        yield EmulatorHandle(server)
    finally:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(server.stop(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()
