"""Shared helpers of the benchmarks: the machine, percentiles, RSS, the mesh registration, the
Kubernetes API a benchmark's stack runs (the emulator or the real kube-apiserver) and the request
records of either."""

from __future__ import annotations

import abc
import contextlib
import datetime
import json
import math
import os
import platform
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import httpx
import psutil
from lazyload_testing.waiting import wait_for as wait_for

REPO = Path(__file__).resolve().parents[1]


def envoy_binary() -> str:
    from lazyload_cli.stack import envoy_path

    return envoy_path()


def envoy_version() -> str:
    try:
        out = subprocess.run(
            [envoy_binary(), "--version"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return f"unknown ({e})"
    for token in out.split():
        if token.count("/") >= 3 and token[0].isalnum():
            return token.split("/")[1]  # <sha>/<version>/<status>/<build>/<ssl>
    return out.strip().splitlines()[-1] if out.strip() else "unknown"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "envoy": envoy_version(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def save_figure(fig: Any, plots: Path, name: str) -> list[str]:
    """Lay out, write `plots/<name>` (PNG, 120 dpi) and close a matplotlib figure; the names of
    the files written, as a benchmark's `plot()` returns them."""
    import matplotlib.pyplot as plt  # imported by the plotting benchmarks anyway

    fig.tight_layout()
    fig.savefig(plots / name, dpi=120)
    plt.close(fig)
    return [name]


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank-interpolated percentile (q in 0..100); None for no values."""
    data = sorted(values)
    if not data:
        return None
    if len(data) == 1:
        return data[0]
    k = (len(data) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def rss_mb(pid: int) -> float | None:
    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except psutil.Error:
        return None


class PollingThread(abc.ABC):
    """A context manager that runs `_run` in a daemon thread named `name` while its block runs:
    `_run` loops until `_stop` is set (on leaving, then the thread is joined, up to
    `join_timeout` seconds), and `_last` runs once after it (a final poll)."""

    def __init__(self, name: str, *, join_timeout: float | None = None) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=name)
        self._join_timeout = join_timeout

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(self._join_timeout)
        self._last()

    @abc.abstractmethod
    def _run(self) -> None:
        """The thread's loop (until `self._stop` is set)."""

    def _last(self) -> None:  # noqa: B027 - an optional hook, empty unless a subclass says
        """Once the thread ended: nothing unless a subclass says."""


class RssSampler(PollingThread):
    """Samples the RSS of some pids every `interval` seconds in a thread; keeps the peak."""

    def __init__(self, pids: dict[str, int], interval: float = 0.25) -> None:
        self.pids = pids
        self.interval = interval
        self.peak: dict[str, float] = {}
        self.last: dict[str, float] = {}
        super().__init__("rss-sampler")

    def _last(self) -> None:
        self.sample()

    def sample(self) -> None:
        for name, pid in self.pids.items():
            value = rss_mb(pid)
            if value is not None:
                self.last[name] = value
                self.peak[name] = max(self.peak.get(name, 0.0), value)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()


class CpuMeter:
    """CPU seconds (user + system) each process and the whole machine spent between `start()`
    and `stop()`: where a load's time went, and how much of the machine other jobs took."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._start: dict[str, float] = {}
        self._machine = 0.0
        self._t0 = 0.0

    @staticmethod
    def _cpu(pid: int) -> float | None:
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.Error:
            return None
        return float(t.user + t.system + t.children_user + t.children_system)

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()
        return float(t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0))

    def start(self) -> CpuMeter:
        self._t0 = time.monotonic()
        self._machine = self._busy()
        self._start = {n: c for n, pid in self.pids.items() if (c := self._cpu(pid)) is not None}
        return self

    def stop(self) -> dict[str, Any]:
        wall = time.monotonic() - self._t0
        spent = {}
        for name, pid in self.pids.items():
            now = self._cpu(pid)
            if now is not None and name in self._start:
                spent[name] = round(now - self._start[name], 1)
        machine = self._busy() - self._machine
        stack = sum(spent.values())
        return {
            "wall_s": round(wall, 1),
            "cores": os.cpu_count(),
            "by_process_s": dict(sorted(spent.items(), key=lambda kv: -kv[1])),
            "stack_s": round(stack, 1),
            "machine_busy_s": round(machine, 1),
            # CPU the machine spent outside this stack (other jobs, the benchmark's own driver)
            "outside_stack_s": round(max(machine - stack, 0.0), 1),
        }


# --- the Kubernetes side ----------------------------------------------------------------------

KUBE_MODES = ("emulator", "real")
EAGER_OFF = {
    "LAZYLOAD_FENCE__EAGER": "false",
    # the storm's destinations are hosts, not registered Services (registering 10,000 of them
    # would be part of the measured time): let the reconciler learn them
    "LAZYLOAD_FENCE__LEARN_UNKNOWN_SERVICES": "true",
}


def stack_config(
    state_dir: Path,
    *,
    kube: str = "emulator",
    extra_env: dict[str, str] | None = None,
    audit: bool = False,
) -> tuple[Any, Path | None]:
    """The `StackConfig` of a benchmark's stack without Envoy, on the emulator or the real
    control plane, and where the real API server writes its audit log (`audit`; None without).

    Fences are made by the edges, as the storm and scale benchmarks measure it: eager auto-fence
    (`LAZYLOAD_FENCE__EAGER`, true by default since 2026-12-06: a fence for every Service before
    any traffic) is turned off here (`EAGER_OFF`), or registering the callers would create every
    fence before the storm and the figures would no longer compare with earlier runs.

    The audit policy is the test kit's (`lazyload_testing.kube_real.AUDIT_POLICY`: every request
    at Metadata level): it costs the API server CPU, so only the benchmarks that count writes per
    object ask for it."""
    from lazyload_cli.stack import StackConfig

    if kube not in KUBE_MODES:
        raise ValueError(f"kube must be one of {KUBE_MODES}, not {kube!r}")
    kube_args: tuple[str, ...] = ()
    log: Path | None = None
    if kube == "real" and audit:
        from lazyload_testing.kube_real import AUDIT_POLICY

        directory = state_dir / "audit"
        directory.mkdir(parents=True, exist_ok=True)
        policy = directory / "policy.yaml"
        policy.write_text(AUDIT_POLICY)
        log = directory / "audit.log"
        kube_args = (
            f"--audit-policy-file={policy}",
            f"--audit-log-path={log}",
            "--audit-log-format=json",
            "--audit-log-mode=blocking",
        )
    config = StackConfig(
        state_dir=state_dir,
        with_envoy=False,
        kube=kube,
        kube_args=kube_args,
        extra_env={**EAGER_OFF, **(extra_env or {})},
    )
    return config, log


def kube_label(kube: str) -> str:
    return "real kube-apiserver + etcd" if kube == "real" else "API emulator"


def plot_file(result: dict[str, Any], name: str) -> str:
    """A plot's file name; `<stem>_real.png` for a run against the real API server, so the two
    runs of one benchmark do not overwrite each other's plot."""
    if result.get("kube") == "real":
        stem, dot, ext = name.rpartition(".")
        return f"{stem}_real{dot}{ext}"
    return name


def kube_api(kubeconfig: str) -> Any:
    from lazyload_common.kube import KubeApi, api_client
    from lazyload_common.settings import KubeSettings

    return KubeApi(api_client(KubeSettings(kubeconfig=Path(kubeconfig))))


def ensure_namespace(kube: Any, name: str) -> None:
    from lazyload_common.kube import KubeConflict

    with contextlib.suppress(KubeConflict):
        kube.create(
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        )


def service_body(namespace: str, name: str, port: int = 9080, target: int = 9080) -> dict:
    labels = {"app": name}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "selector": labels,
            "ports": [{"name": "http", "port": port, "targetPort": target, "protocol": "TCP"}],
        },
    }


def create_all(kube: Any, items: Iterable[tuple[str, dict]], *, workers: int = 8) -> int:
    """POST many objects in parallel threads (already existing ones are skipped)."""
    from lazyload_common.kube import KubeConflict

    def create(item: tuple[str, dict]) -> int:
        try:
            kube.create(*item)
            return 1
        except KubeConflict:
            return 0

    with ThreadPoolExecutor(workers) as pool:
        return sum(pool.map(create, list(items)))


WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "DELETE", "CREATE", "UPDATE"})


class RequestLog:
    """Reads the emulator's request log (GET <kube_api>/emulator/v1/requests) and keeps every
    record seen, deduplicated, so polling it faster than it wraps loses nothing.

    Every GET returns the whole ring (up to `RING` records), which costs the emulator - the
    system under test - CPU: poll as seldom as the observed request rate allows
    (`next_interval`). A poll whose oldest record is newer than the newest one already seen may
    have missed records: counted in `gaps` (reported, so a count is never silently short)."""

    RING = 10_000  # the emulator's default request_log_size

    def __init__(self, kube_api_url: str) -> None:
        self.url = kube_api_url.rstrip("/") + "/emulator/v1/requests"
        self.records: dict[tuple, dict] = {}
        self.max_batch = 0
        self.polls = 0
        self.gaps = 0
        self._newest: float | None = None

    def clear(self) -> None:
        httpx.delete(self.url, timeout=10).raise_for_status()
        self.records.clear()
        self._newest = None

    def poll(self) -> int:
        """Read the ring; returns how many records were new."""
        batch = httpx.get(self.url, timeout=30).json()
        self.polls += 1
        self.max_batch = max(self.max_batch, len(batch))
        before = len(self.records)
        full = batch and self._newest is not None and len(batch) >= self.RING
        if full and batch[0]["time"] > self._newest:
            self.gaps += 1
        for r in batch:
            key = (r["time"], r["verb"], r["path"], r["query"], r["status"])
            self.records[key] = r
        if batch:
            self._newest = max(self._newest or 0.0, batch[-1]["time"])
        return len(self.records) - before

    def next_interval(
        self, new: int, elapsed: float, *, low: float = 0.25, high: float = 5.0
    ) -> float:
        """Seconds until the next poll: the ring a quarter full at the rate just seen."""
        rate = new / max(elapsed, 1e-3)
        if rate <= 0:
            return high
        return max(low, min(high, 0.25 * self.RING / rate))

    def writes(self) -> list[dict]:
        return [r for r in self.records.values() if r["verb"].upper() in WRITE_VERBS]


class AuditLog:
    """The request records of the real kube-apiserver, from its JSON audit log (written with
    `stack_config(..., audit=True)`), in the shape of `RequestLog`'s: time (when the request was
    received, epoch seconds), verb (the HTTP verb), path, query, status, user.

    `lazyload_testing.kube_real.RealKube.requests()` reads the same file for the tests, without
    the time of each request (the storm's per-window counts need it) and only all at once; this
    reader follows the file, so polling it costs the benchmark, not the API server."""

    VERBS = {
        "create": "POST",
        "update": "PUT",
        "patch": "PATCH",
        "delete": "DELETE",
        "deletecollection": "DELETE",
    }

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[str, dict] = {}
        self.max_batch = 0
        self.polls = 0
        self.gaps = 0  # a file is never lost records of: always 0 (kept for RequestLog's shape)
        self._offset = 0
        self._partial = b""

    def clear(self) -> None:
        self.records.clear()
        self._offset = self.path.stat().st_size if self.path.exists() else 0
        self._partial = b""

    def poll(self) -> int:
        """Read what the API server appended; returns how many records were new."""
        self.polls += 1
        if not self.path.exists():
            return 0
        with self.path.open("rb") as f:
            f.seek(self._offset)
            data = self._partial + f.read()
            self._offset = f.tell()
        lines = data.split(b"\n")
        self._partial = lines.pop()  # a line the API server is still writing
        before = len(self.records)
        for line in lines:
            if not line.strip():
                continue
            event = json.loads(line)
            if event.get("stage") != "ResponseComplete":
                continue
            uri = event.get("requestURI", "")
            path, _, query = uri.partition("?")
            received = event.get("requestReceivedTimestamp") or event.get("stageTimestamp")
            self.records[event["auditID"]] = {
                "time": datetime.datetime.fromisoformat(received).timestamp(),
                "verb": self.VERBS.get(event.get("verb", ""), "GET"),
                "path": path,
                "query": query,
                "status": int((event.get("responseStatus") or {}).get("code", 0)),
                "user": (event.get("user") or {}).get("username", ""),
            }
        self.max_batch = max(self.max_batch, len(self.records) - before)
        return len(self.records) - before

    def next_interval(
        self, new: int, elapsed: float, *, low: float = 0.25, high: float = 5.0
    ) -> float:
        return 1.0  # reading a file costs the API server nothing: a steady pace

    def writes(self) -> list[dict]:
        return [r for r in self.records.values() if r["verb"].upper() in WRITE_VERBS]


def metrics_writes(admin: dict[str, str]) -> dict[str, dict[str, float]]:
    """The services' own write counters from their Prometheus /metrics: fence-reconciler's
    `lazyload_fence_writes_total{op}` (ServiceFence writes) and sidecar-writer's
    `lazyload_sidecar_writer_writes_total{action}` (Sidecar writes). Needs no request log: the
    way to count writes on an API server that keeps none. The writer's `SidecarReady` condition
    patches are in neither."""
    wanted = {
        "fence-reconciler": ("lazyload_fence_writes_total", "op"),
        "sidecar-writer": ("lazyload_sidecar_writer_writes_total", "action"),
    }
    out: dict[str, dict[str, float]] = {}
    for service, (metric, label) in wanted.items():
        counts: dict[str, float] = {}
        try:
            text = httpx.get(admin[service] + "/metrics", timeout=10).text
        except (httpx.HTTPError, KeyError):
            continue
        for line in text.splitlines():
            if not line.startswith(metric + "{"):
                continue
            labels, _, value = line.rpartition(" ")
            for part in labels[labels.index("{") + 1 : labels.rindex("}")].split(","):
                key, _, quoted = part.partition("=")
                if key == label:
                    counts[quoted.strip('"')] = counts.get(quoted.strip('"'), 0.0) + float(value)
        out[service] = counts
    return out


# --- tiny HTTP destinations -----------------------------------------------------------------


class _OkHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


def start_ok_server(ip: str, port: int) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((ip, port), _OkHandler)
    threading.Thread(target=server.serve_forever, daemon=True, name=f"ok:{ip}").start()
    return server
