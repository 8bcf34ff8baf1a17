"""The stack `make faults` breaks: nats-server (one node, or a three-node JetStream cluster on
loopback), the Kubernetes API emulator (its admin API injects the API faults), the four services,
and a supervisor that restarts whatever exits, as a Deployment restarts its pod.

Not `lazyload up` (cli/src/lazyload_cli/stack.py): that runs one nats-server, and the faults need a
cluster too, and nats-server processes that a fault may hold down for a while. The processes are
the same (`lazyload_cli.processes.ProcessGroup`: own session, log file each, same restart
back-off); the services get the settings `lazyload up` gives them, with every NATS URL in
`LAZYLOAD_NATS__URL` (comma-separated) and `LAZYLOAD_NATS__STREAM_REPLICAS` = the node count.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from lazyload_cli.processes import Started

from bench.common import ensure_namespace, kube_api

SERVICES = ("accesslog-ingest", "fence-reconciler", "sidecar-writer", "global-pilot")
NAMESPACE = "faults"
DEST_NAMESPACE = "faults-dst"


def caller_name(i: int) -> str:
    return f"c-{i}"


def caller_ip(i: int) -> str:
    return f"10.77.{i // 250}.{i % 250 + 1}"


def dest_name(j: int) -> str:
    return f"d-{j}"


def dest_fqdn(j: int) -> str:
    return f"{dest_name(j)}.{DEST_NAMESPACE}.svc.cluster.local"


class FaultStack(Started):
    """Starts, supervises, breaks and stops the processes of one faults run."""

    def __init__(
        self,
        workdir: Path,
        *,
        nats_nodes: int = 1,
        callers: int = 40,
        destinations: int = 200,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        from lazyload_cli import ports
        from lazyload_cli.processes import ProcessGroup

        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.processes = ProcessGroup(workdir / "logs")
        self.nats_nodes = nats_nodes
        self.callers, self.destinations = callers, destinations
        self.extra_env = dict(extra_env or {})
        picks = iter(ports.free_ports(2 * nats_nodes + 3 + len(SERVICES), "127.0.0.1"))
        self.nats_ports = [next(picks) for _ in range(nats_nodes)]
        self.route_ports = [next(picks) for _ in range(nats_nodes)]
        self.kube_port, self.als_port, self.xds_port = next(picks), next(picks), next(picks)
        self.admin_ports = {name: next(picks) for name in SERVICES}
        self.kubeconfig = workdir / "kubeconfig"
        self.restarts: list[tuple[float, str]] = []
        self._held: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._supervisor = threading.Thread(target=self._supervise, daemon=True, name="supervise")

    # -- addresses -----------------------------------------------------------------------------

    @property
    def nats_urls(self) -> list[str]:
        return [f"nats://127.0.0.1:{p}" for p in self.nats_ports]

    @property
    def nats_url(self) -> str:
        """Every node, comma-separated: what LAZYLOAD_NATS__URL takes."""
        return ",".join(self.nats_urls)

    @property
    def kube_api_url(self) -> str:
        return f"http://127.0.0.1:{self.kube_port}"

    def admin(self, name: str) -> str:
        return f"http://127.0.0.1:{self.admin_ports[name]}"

    def pid(self, name: str) -> int:
        return self.processes.process(name).popen.pid

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        from lazyload_cli.stack import bin_path

        for i in range(self.nats_nodes):
            self.processes.spawn(self.nats_name(i), [bin_path("nats-server"), *self._nats_args(i)])
        for i, port in enumerate(self.nats_ports):
            self.processes.wait_tcp(self.nats_name(i), "127.0.0.1", port, timeout=30)
        self._start_emulator(bin_path("lazyload-kube-emulator"))
        self._register_mesh()
        for name in SERVICES:
            self.processes.spawn(name, [bin_path(f"lazyload-{name}")], env=self._env(name))
        for name in SERVICES:
            self.processes.wait_http(name, self.admin(name) + "/readyz", timeout=120)
        self._supervisor.start()

    def stop(self) -> None:
        self._stop.set()
        if self._supervisor.is_alive():
            self._supervisor.join()
        with self._lock:
            for process in self._held.values():
                self.processes.processes.append(process)
            self._held.clear()
            self.processes.stop()

    def nats_name(self, i: int) -> str:
        return "nats-server" if self.nats_nodes == 1 else f"nats-{i}"

    def _nats_args(self, i: int) -> list[str]:
        store = self.workdir / f"nats-{i}"
        if self.nats_nodes == 1:
            return ["-a", "127.0.0.1", "-p", str(self.nats_ports[0]), "-js", "-sd", str(store)]
        routes = ", ".join(
            f'"nats://127.0.0.1:{p}"' for k, p in enumerate(self.route_ports) if k != i
        )
        conf = self.workdir / f"nats-{i}.conf"
        conf.write_text(
            f'server_name: "n{i}"\n'
            f"listen: 127.0.0.1:{self.nats_ports[i]}\n"
            f'jetstream {{ store_dir: "{store}" }}\n'
            f'cluster {{ name: "lazyload"\n  listen: 127.0.0.1:{self.route_ports[i]}\n'
            f"  routes: [{routes}] }}\n"
        )
        return ["-c", str(conf)]

    def _start_emulator(self, binary: str) -> None:
        from lazyload_cli.stack import repo_root

        crds = repo_root() / "deploy" / "crds"
        cmd = [binary, "--host", "127.0.0.1", "--port", str(self.kube_port)]
        cmd += ["--kubeconfig-out", str(self.kubeconfig)]
        for directory in (crds, crds / "istio"):
            if directory.is_dir():
                cmd += ["--crds", str(directory)]
        self.kubeconfig.unlink(missing_ok=True)
        self.processes.spawn("kube-emulator", cmd)
        self.processes.wait_http("kube-emulator", self.kube_api_url + "/version", timeout=30)
        self.processes.wait_file("kube-emulator", self.kubeconfig, timeout=10)

    def _register_mesh(self) -> None:
        """The callers (Services with Endpoints: ingest maps an entry's address to them) and the
        destinations (Services) of the load."""
        from bench.common import create_all, service_body

        kube = kube_api(str(self.kubeconfig))
        for ns in ("istio-system", "mesh-operator", NAMESPACE, DEST_NAMESPACE):
            ensure_namespace(kube, ns)
        items: list[tuple[str, dict]] = []
        for i in range(self.callers):
            name = caller_name(i)
            items.append(
                (f"/api/v1/namespaces/{NAMESPACE}/services", service_body(NAMESPACE, name))
            )
            items.append(
                (
                    f"/api/v1/namespaces/{NAMESPACE}/endpoints",
                    {
                        "apiVersion": "v1",
                        "kind": "Endpoints",
                        "metadata": {"name": name, "namespace": NAMESPACE},
                        "subsets": [
                            {
                                "addresses": [{"ip": caller_ip(i)}],
                                "ports": [{"name": "http", "port": 9080, "protocol": "TCP"}],
                            }
                        ],
                    },
                )
            )
        for j in range(self.destinations):
            path = f"/api/v1/namespaces/{DEST_NAMESPACE}/services"
            items.append((path, service_body(DEST_NAMESPACE, dest_name(j))))
        create_all(kube, items, workers=4)
        kube.api.close()

    def _env(self, name: str) -> dict[str, str]:
        env = {
            "LAZYLOAD_NATS__URL": self.nats_url,
            "LAZYLOAD_NATS__STREAM_REPLICAS": str(self.nats_nodes),
            "LAZYLOAD_KUBE__KUBECONFIG": str(self.kubeconfig),
            "LAZYLOAD_ADMIN__HOST": "127.0.0.1",
            "LAZYLOAD_ADMIN__PORT": str(self.admin_ports[name]),
            "LAZYLOAD_ADMIN__AUTH": "none",
            "LAZYLOAD_LOG_LEVEL": "INFO",
            **self.extra_env,
        }
        if name == "accesslog-ingest":
            env |= {"LAZYLOAD_GRPC__HOST": "127.0.0.1", "LAZYLOAD_GRPC__PORT": str(self.als_port)}
        if name == "global-pilot":
            env |= {
                "LAZYLOAD_XDS__HOST": "127.0.0.1",
                "LAZYLOAD_XDS__PORT": str(self.xds_port),
                "LAZYLOAD_LISTENER__ADDRESS": "127.0.0.1",
                "LAZYLOAD_LISTENER__PORTS": json.dumps([15001]),
                "LAZYLOAD_ALS__HOST": "127.0.0.1",
                "LAZYLOAD_ALS__PORT": str(self.als_port),
            }
        return env

    # -- supervision and faults ----------------------------------------------------------------

    def _supervise(self) -> None:
        while not self._stop.wait(0.1):
            with self._lock:
                for process in self.processes.supervise():
                    self.restarts.append((time.time(), process.name))

    def kill(self, name: str, *, hold: float = 0.0) -> float:
        """SIGKILL `name` (its whole session); with `hold`, it is kept down that many seconds
        before the supervisor may restart it. The time of the kill."""
        with self._lock:
            process = self.processes.process(name)
            if hold:
                self.processes.processes.remove(process)
                self._held[name] = process
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.popen.pid, signal.SIGKILL)
            process.popen.wait()
            killed = time.time()
        if hold:
            time.sleep(hold)
            with self._lock:
                self.processes.processes.append(self._held.pop(name))
        return killed

    def ready(self, name: str) -> bool:
        try:
            return httpx.get(self.admin(name) + "/readyz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, name: str, *, timeout: float) -> float | None:
        """Seconds until `name` answers /readyz 200 (None: not within `timeout`)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.ready(name):
                return time.monotonic() - t0
            time.sleep(0.1)
        return None

    def nats_ready(self, i: int) -> bool:
        import socket

        try:
            with socket.create_connection(("127.0.0.1", self.nats_ports[i]), timeout=0.5):
                return True
        except OSError:
            return False

    def log_tail(self, name: str, lines: int = 20) -> str:
        return self.processes.process(name).log_tail(lines)
