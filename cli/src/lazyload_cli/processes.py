"""Local processes of a stack: spawned in their own session, logged to files, waited for, stopped.

`ProcessGroup` is what `lazyload up` (and the test fixtures that start real servers) use to run a
component: `spawn` starts it with its output in `<logs>/<name>.log`, the `wait_*` helpers poll a
readiness probe while checking that the process is still alive, `supervise` restarts a process
that exited (with back-off, as a Deployment restarts its pod), and `stop` ends them in reverse
order (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import abc
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self


class StackError(RuntimeError):
    """A component of the stack failed to start; the message names it and its log."""


class Started(abc.ABC):
    """A context manager over `start` and `stop`: entering starts (and, when that fails, stops
    what did start before the error goes on), leaving stops."""

    @abc.abstractmethod
    def start(self) -> object:
        """Start every part (what started is stopped by `stop`)."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop what started (also after a start that failed half-way)."""

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def installed(name: str, candidate: Path, hint: str = "") -> str:
    """The program `name`: `candidate` (where `make setup` installs it) when it exists, else
    `name` on the PATH; StackError saying to run `make setup` (and `hint`) when neither is."""
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise StackError(f"{name} not found: run `make setup`{hint}")
    return found


BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
STABLE_AFTER = 60.0
"""Seconds a restarted process must stay up before its back-off starts from the beginning."""


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    cmd: Sequence[str] = ()
    env: dict[str, str] | None = None
    restarts: int = 0
    started_at: float = 0.0
    backoff: float = BACKOFF_FIRST
    restart_at: float | None = None

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        if not self.alive():
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


class ProcessGroup:
    """The processes of one stack, each logging to `<log_dir>/<name>.log`."""

    def __init__(self, log_dir: Path, *, extra_env: dict[str, str] | None = None) -> None:
        self.log_dir = log_dir
        self.extra_env = dict(extra_env or {})
        self.processes: list[Process] = []
        log_dir.mkdir(parents=True, exist_ok=True)

    def spawn(self, name: str, cmd: Sequence[str], *, env: dict[str, str] | None = None) -> Process:
        log_path = self.log_dir / f"{name}.log"
        process = Process(name, self._popen(name, cmd, env), log_path, tuple(cmd), env)
        process.started_at = time.monotonic()
        self.processes.append(process)
        return process

    def _popen(
        self, name: str, cmd: Sequence[str], env: dict[str, str] | None
    ) -> subprocess.Popen[bytes]:
        with (self.log_dir / f"{name}.log").open("ab") as log:
            return subprocess.Popen(
                list(cmd),
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {}), **self.extra_env},
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def supervise(self) -> list[Process]:
        """Restart every process that exited, each after its back-off (1 s, doubling up to 30 s;
        from 1 s again once it stayed up a minute); the processes restarted by this call."""
        now = time.monotonic()
        restarted = []
        for process in self.processes:
            if process.alive():
                if process.restarts and now - process.started_at > STABLE_AFTER:
                    process.backoff = BACKOFF_FIRST
                continue
            if process.restart_at is None:
                process.restart_at = now + process.backoff
                with process.log_path.open("ab") as log:
                    log.write(
                        f"--- lazyload up: exited ({process.popen.returncode}), restarting in "
                        f"{process.backoff:.0f} s ---\n".encode()
                    )
                continue
            if now < process.restart_at:
                continue
            process.popen = self._popen(process.name, process.cmd, process.env)
            process.restarts += 1
            process.started_at, process.restart_at = now, None
            process.backoff = min(process.backoff * 2, BACKOFF_MAX)
            restarted.append(process)
        return restarted

    def process(self, name: str) -> Process:
        return next(p for p in self.processes if p.name == name)

    def pids(self) -> dict[str, int]:
        return {p.name: p.popen.pid for p in self.processes}

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()

    def check_alive(self) -> None:
        for process in self.processes:
            if not process.alive():
                raise StackError(
                    f"{process.name} exited ({process.popen.returncode}); log {process.log_path}:\n"
                    f"{process.log_tail()}"
                )

    # -- waiting -------------------------------------------------------------------------------

    def wait(self, name: str, probe: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll `probe` until it is true; fail early, with the log's tail, if `name` exits."""
        deadline = time.monotonic() + timeout
        process = self.process(name)
        while time.monotonic() < deadline:
            if not process.alive():
                raise StackError(
                    f"{name} exited ({process.popen.returncode}) while starting; "
                    f"log {process.log_path}:\n{process.log_tail()}"
                )
            if probe():
                return
            time.sleep(0.05)
        raise StackError(
            f"{name}: {what} not ready within {timeout}s; log {process.log_path}:\n"
            f"{process.log_tail()}"
        )

    def wait_http(
        self, name: str, url: str, *, timeout: float, verify: ssl.SSLContext | bool = True
    ) -> None:
        """Wait until GET `url` answers 200 (`verify`: the TLS context, e.g. with a client cert)."""
        import httpx

        def probe() -> bool:
            try:
                return httpx.get(url, timeout=1.0, verify=verify).status_code == 200
            except httpx.HTTPError:
                return False

        self.wait(name, probe, timeout, url)

    def wait_tcp(self, name: str, host: str, port: int, *, timeout: float) -> None:
        def probe() -> bool:
            try:
                with socket.create_connection((host, port), timeout=0.5):
                    return True
            except OSError:
                return False

        self.wait(name, probe, timeout, f"{host}:{port}")

    def wait_file(self, name: str, path: Path, *, timeout: float) -> None:
        self.wait(name, path.exists, timeout, str(path))
