"""Headless Chromium driven over the Chrome DevTools Protocol, for tests of lazyload's pages.

Debian's `chromium` (installed by `make setup` where apt-get is available), started with
`--headless --remote-debugging-port=0` and its own profile directory; the port is read from the
`DevToolsActivePort` file Chromium writes there. One page target, spoken to over its WebSocket
(`websocket-client`, already a dependency of the Kubernetes client): `open(url)` navigates,
`evaluate(js)` returns a JSON value, `wait_for(js)` polls until the expression is truthy.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import websocket

from lazyload_testing import waiting

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def chromium_binary() -> str:
    """The Chromium on the PATH; an AssertionError naming the fix when there is none."""
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise AssertionError(
        "no chromium on the PATH: `make setup` installs Debian's chromium (apt-get install -y "
        "chromium) when run as root"
    )


class Chromium:
    """A headless Chromium with one page (a context manager)."""

    def __init__(self, profile: Path, *, timeout: float = 30.0) -> None:
        self.profile = profile
        self.timeout = timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log: BinaryIO | None = None
        self._socket: websocket.WebSocket | None = None
        self._ids = itertools.count(1)

    def __enter__(self) -> Chromium:
        self.profile.mkdir(parents=True, exist_ok=True)
        self._log = (self.profile / "chromium.log").open("wb")
        self._process = subprocess.Popen(
            [
                chromium_binary(),
                "--headless",
                "--no-sandbox",  # tests run as root in a container
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                f"--user-data-dir={self.profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        port = self._devtools_port()
        pages = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
        page = next(p for p in pages if p.get("type") == "page")
        self._socket = websocket.create_connection(
            page["webSocketDebuggerUrl"], timeout=self.timeout, suppress_origin=True
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._socket is not None:
            self._socket.close()
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._log is not None:
            self._log.close()

    def _devtools_port(self) -> int:
        path = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                log = (self.profile / "chromium.log").read_text(errors="replace")
                raise AssertionError(f"chromium exited: {log[-2000:]}")
            if path.exists() and path.read_text().strip():
                return int(path.read_text().splitlines()[0])
            time.sleep(0.1)
        raise AssertionError("chromium wrote no DevToolsActivePort")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """One CDP command; its result (events that arrive meanwhile are skipped)."""
        assert self._socket is not None
        ident = next(self._ids)
        self._socket.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self._socket.recv())
            if message.get("id") == ident:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return dict(message.get("result") or {})

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        """The JSON value of `expression` in the page (a thrown error fails the test)."""
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float | None = None) -> Any:
        """Poll `expression` until it is truthy; its value. An expression that fails counts as
        not true yet: the page is still loading, its names are not defined yet."""
        return waiting.wait_for(
            lambda: self.evaluate(expression),
            timeout=timeout or self.timeout,
            what=expression,
            ignore=(AssertionError,),
        )
