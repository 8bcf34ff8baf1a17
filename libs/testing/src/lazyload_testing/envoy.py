"""A real Envoy for tests: find the binary, start it on a bootstrap, wait for /ready, stop it.

`envoy_runner` is a factory fixture: `handle = await envoy_runner(bootstrap_dict)` starts Envoy
with its admin on a free port (learned through `--admin-address-path`), its log in the test's tmp
dir, and waits until `/ready` says LIVE (so the control plane must already be serving). Every
Envoy it started is stopped at teardown. `start_envoy()` is the same without pytest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

__all__ = ["EnvoyProcess", "envoy_binary", "envoy_runner", "start_envoy"]

EnvoyStarter = Callable[..., Awaitable["EnvoyProcess"]]
_ADDRESS_FILE = "admin-address"
_LOOPBACK_ANY_PORT = {"socket_address": {"address": "127.0.0.1", "port_value": 0}}


def envoy_binary() -> str:
    """`$LAZYLOAD_ENVOY_BIN`, else `<repo>/.venv-envoy/bin/envoy`, else `envoy` on PATH."""
    configured = os.environ.get("LAZYLOAD_ENVOY_BIN")
    if configured:
        return configured
    for base in (Path(__file__).resolve(), Path.cwd().resolve()):
        for parent in base.parents:
            candidate = parent / ".venv-envoy" / "bin" / "envoy"
            if candidate.is_file():
                return str(candidate)
    found = shutil.which("envoy")
    if found is None:
        raise FileNotFoundError("no Envoy: set LAZYLOAD_ENVOY_BIN or run `make setup`")
    return found


@dataclass
class EnvoyProcess:
    """A running Envoy and its admin endpoint."""

    process: subprocess.Popen[bytes]
    admin_url: str
    workdir: Path
    log_path: Path
    _output: Any = field(repr=False, default=None)

    async def admin(self, path: str, *, method: str = "GET") -> tuple[int, str]:
        """Call the admin API; return (status, body)."""
        return await asyncio.to_thread(_http, method, self.admin_url + path)

    async def config_dump(self, resource: str | None = None) -> dict[str, Any]:
        """`/config_dump` as JSON (`resource` e.g. "dynamic_active_clusters")."""
        query = f"?resource={resource}" if resource else ""
        status, body = await self.admin("/config_dump" + query)
        if status != 200:
            raise RuntimeError(f"config_dump: {status} {body[:200]}")
        return json.loads(body)

    async def stats(self, filter_regex: str | None = None) -> dict[str, int]:
        """Counters and gauges from `/stats` as numbers."""
        query = f"?filter={filter_regex}" if filter_regex else ""
        _, body = await self.admin("/stats" + query)
        values: dict[str, int] = {}
        for line in body.splitlines():
            name, sep, value = line.partition(": ")
            if sep and value.strip().lstrip("-").isdigit():
                values[name] = int(value)
        return values

    def log_tail(self, lines: int = 40) -> str:
        """The end of Envoy's log, for failure messages."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    async def stop(self, timeout: float = 5.0) -> None:
        """Terminate Envoy (kill it after `timeout`) and close its output."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                await asyncio.to_thread(self.process.wait, timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                await asyncio.to_thread(self.process.wait)
        if self._output is not None:
            self._output.close()
            self._output = None


async def start_envoy(
    bootstrap: dict[str, Any],
    workdir: Path,
    *,
    wait_ready: bool = True,
    timeout: float = 30.0,
    log_level: str = "info",
    extra_args: Sequence[str] = (),
) -> EnvoyProcess:
    """Start Envoy on `bootstrap` in `workdir`; admin on a free port unless the bootstrap has one.

    With `wait_ready`, return once `/ready` is LIVE: Envoy gets there only after its first xDS
    answers (or their initial fetch timeout), so start the control plane first.
    """
    envoy = _spawn(bootstrap, workdir, log_level, extra_args)
    try:
        envoy.admin_url = "http://" + await _admin_address(envoy, timeout)
        if wait_ready:
            await _wait_live(envoy, timeout)
    except BaseException:
        await envoy.stop()
        raise
    return envoy


def _spawn(
    bootstrap: dict[str, Any], workdir: Path, log_level: str, extra_args: Sequence[str]
) -> EnvoyProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    config = dict(bootstrap)
    config.setdefault("admin", {"address": _LOOPBACK_ANY_PORT})
    config_path = workdir / "bootstrap.json"
    config_path.write_text(json.dumps(config, indent=2))
    (workdir / _ADDRESS_FILE).unlink(missing_ok=True)
    log_path = workdir / "envoy.log"
    output = (workdir / "envoy.out").open("wb")
    args = [
        envoy_binary(),
        *("--config-path", str(config_path)),
        "--disable-hot-restart",
        *("--concurrency", "1"),
        *("--base-id", str(random.randint(1, 1 << 20))),
        *("--admin-address-path", str(workdir / _ADDRESS_FILE)),
        *("--log-path", str(log_path)),
        *("--log-level", log_level),
        *extra_args,
    ]
    process = subprocess.Popen(args, stdout=output, stderr=subprocess.STDOUT, cwd=workdir)
    return EnvoyProcess(process, "", workdir, log_path, output)


async def _admin_address(envoy: EnvoyProcess, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _check_alive(envoy)
        if address := _read_address(envoy.workdir / _ADDRESS_FILE):
            return address
        await asyncio.sleep(0.02)
    raise TimeoutError(f"Envoy wrote no admin address in {timeout}s:\n{envoy.log_tail()}")


async def _wait_live(envoy: EnvoyProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _check_alive(envoy)
        status, _ = await envoy.admin("/ready")
        if status == 200:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"Envoy not LIVE in {timeout}s:\n{envoy.log_tail()}")


def _read_address(path: Path) -> str:
    return path.read_text().strip() if path.exists() else ""


def _check_alive(envoy: EnvoyProcess) -> None:
    code = envoy.process.poll()
    if code is not None:
        output = (envoy.workdir / "envoy.out").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"Envoy exited with {code}:\n{envoy.log_tail()}\n{output}")


def _http(method: str, url: str) -> tuple[int, str]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        with contextlib.closing(e):
            return e.code, e.read().decode("utf-8", "replace")
    except (urllib.error.URLError, ConnectionError):
        return 0, ""


@pytest.fixture
async def envoy_runner(tmp_path: Path) -> AsyncIterator[EnvoyStarter]:
    """Factory: `await envoy_runner(bootstrap, **start_envoy_kwargs)` -> a LIVE `EnvoyProcess`."""
    started: list[EnvoyProcess] = []

    async def start(bootstrap: dict[str, Any], **kwargs: Any) -> EnvoyProcess:
        workdir = tmp_path / f"envoy-{len(started)}"
        envoy = await start_envoy(bootstrap, workdir, **kwargs)
        started.append(envoy)
        return envoy

    yield start
    for envoy in reversed(started):
        await envoy.stop()
