"""What the real-Istio benchmarks (`mesh_convergence`, `mesh_savings`, `first_calls`) share: the
rig of `lazyload_testing.mesh` used as a library (istiod + istio-proxy pods in network namespaces on
a real kube-apiserver), bulk-written callee Services, and the measurements of a sidecar (its Envoy's
RSS from /proc, its config size, istiod's view of its sync, istiod's own metrics).

Callees are Services (with the EndpointSlice the EndpointSlice controller would write) whose
endpoints are a few shared echo pods: pods are expensive (each a network namespace with an Envoy),
Services are only API objects. Needs root and the Go-built binaries (`make setup`).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import wait_for

DOMAIN = "cluster.local"
CALLEE_PORT = 80


@contextlib.contextmanager
def istio_rig(workdir: Path, mesh: Any = None) -> Iterator[Any]:
    """A private control plane (etcd + kube-apiserver) and istiod with the rig's pod network;
    `mesh`: one already running (a test's `istio_mesh`, whose end removes what the run added)."""
    from lazyload_testing.mesh import start_istio_mesh

    if mesh is not None:
        yield mesh
        return
    workdir.mkdir(parents=True, exist_ok=True)
    with start_istio_mesh(workdir / "mesh") as started:
        yield started


def ensure_namespace(mesh: Any, namespace: str) -> None:
    # remembered: removed with the run's workloads (waits if a run before removed it)
    mesh._ensure_namespace(namespace)


def callee_host(namespace: str, name: str) -> str:
    return f"{name}.{namespace}.svc.{DOMAIN}"


def create_callees(
    mesh: Any, namespace: str, names: Sequence[str], backends: Sequence[Any], *, workers: int = 8
) -> float:
    """A Service (port `http` 80) and its EndpointSlice per name, the endpoints spread round-robin
    over the `backends` pods (MeshWorkloads serving HTTP on 80). Returns the seconds it took."""
    ensure_namespace(mesh, namespace)
    api = mesh.api
    pod_uids = {
        b.name: api.get(f"/api/v1/namespaces/{b.namespace}/pods/{b.name}")["metadata"]["uid"]
        for b in backends
    }

    def create(item: tuple[int, str]) -> None:
        index, name = item
        backend = backends[index % len(backends)]
        api.create(
            f"/api/v1/namespaces/{namespace}/services",
            {
                "metadata": {"name": name, "labels": {"app": name}},
                "spec": {
                    "ports": [{"name": "http", "port": CALLEE_PORT, "targetPort": CALLEE_PORT}]
                },
            },
        )
        api.create(
            f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
            {
                "metadata": {
                    "name": f"{name}-bench",
                    "labels": {
                        "kubernetes.io/service-name": name,
                        "endpointslice.kubernetes.io/managed-by": "lazyload-bench",
                    },
                },
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": CALLEE_PORT, "protocol": "TCP"}],
                "endpoints": [
                    {
                        "addresses": [backend.ip],
                        "conditions": {"ready": True, "serving": True, "terminating": False},
                        "targetRef": {
                            "kind": "Pod",
                            "namespace": backend.namespace,
                            "name": backend.name,
                            "uid": pod_uids[backend.name],
                        },
                    }
                ],
            },
        )

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(create, enumerate(names)))
    return time.perf_counter() - t0


# -- a sidecar's measurements -------------------------------------------------------------------


@dataclass
class CallRig:
    """Lazyload in the rig with fenced callers ready to call their callees (`call_rig`)."""

    mesh: Any
    stack: Any
    global_sidecar: Any
    callers: list[Any]
    hosts: list[str]
    """The callees' FQDNs, in the order of the names given."""
    create_s: float
    """Seconds the callee Services took to create."""
    global_sidecar_ready_s: float
    """Seconds until the global-sidecar's own proxy knew the last callee."""


@contextlib.contextmanager
def call_rig(
    workdir: Path,
    *,
    namespaces: tuple[str, str, str],
    callees: Sequence[str],
    callers: int,
    echo_pods: int,
    global_sidecar_timeout: float,
    mesh: Any = None,
) -> Iterator[CallRig]:
    """The rig with lazyload in it, `echo_pods` echo pods serving the Services `callees` and
    `callers` caller pods, each fenced (its Sidecar written, the global-sidecar in its config and
    synced). `namespaces` = (callers, callees, echo pods); the callees' namespace gets no fences."""
    from lazyload_testing.mesh_lazyload import LazyloadInMesh

    callers_ns, callees_ns, echo_ns = namespaces
    with istio_rig(workdir, mesh) as mesh:
        env = {"LAZYLOAD_FENCE__DENY_NAMESPACES": json.dumps([callees_ns])}
        with LazyloadInMesh(mesh, workdir / "lazyload", extra_env=env) as stack:
            gs = stack.global_sidecar
            assert gs is not None and gs.proxy is not None
            echoes = [
                mesh.add_workload(echo_ns, f"echo-{i}", {"http": 80}) for i in range(echo_pods)
            ]
            pods = [
                mesh.add_workload(callers_ns, f"caller-{i}", {"http": 80}) for i in range(callers)
            ]
            create_s = create_callees(mesh, callees_ns, callees, echoes)
            hosts = [callee_host(callees_ns, name) for name in callees]
            t0 = time.perf_counter()
            # the global-sidecar's own proxy must know every callee before the first calls
            gs.proxy.wait_for_clusters(
                f"outbound|{CALLEE_PORT}||{hosts[-1]}", timeout=global_sidecar_timeout
            )
            gs_ready_s = time.perf_counter() - t0
            for caller in pods:
                stack.wait_for(
                    lambda c=caller: stack.sidecar(callers_ns, c.name), "caller Sidecar", 60
                )
                caller.wait_for_clusters(gs.cluster, timeout=60)
                caller.wait_synced(timeout=60)
            yield CallRig(mesh, stack, gs, pods, hosts, create_s, gs_ready_s)


def envoy_pid(workload: Any) -> int:
    """The pid of the Envoy of a workload's istio-proxy (pilot-agent's child in its netns)."""
    pids = subprocess.run(
        ["ip", "netns", "pids", workload.netns], capture_output=True, text=True, check=False
    ).stdout.split()
    for pid in pids:
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == "envoy":
                return int(pid)
    raise RuntimeError(f"no envoy process in {workload.netns} (pids {pids})")


def rss_mb(pid: int) -> float:
    """VmRSS of a process, from /proc/<pid>/status, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def has_cluster(workload: Any, cluster: str) -> bool:
    """The sidecar holds `cluster` (a name-filtered config_dump: small whatever the mesh size)."""
    regex = urllib.parse.quote("^" + cluster.replace(".", r"\.").replace("|", r"\|") + "$")
    body = workload.admin(f"/config_dump?resource=dynamic_active_clusters&name_regex={regex}")
    return cluster in body


def route_has_domain(workload: Any, route: str, domain: str) -> bool:
    """Route configuration `route` of the sidecar has a virtual host for `domain`."""
    body = workload.admin(f"/config_dump?resource=dynamic_route_configs&name_regex=^{route}$")
    return f'"{domain}"' in body


def syncz(mesh: Any) -> dict[str, dict[str, Any]]:
    """istiod's `/debug/syncz`: proxy id -> per xDS type what was sent and what was ACKed."""
    with urllib.request.urlopen(f"{mesh.debug_url}/debug/syncz", timeout=10) as response:
        entries = json.load(response)
    return {e["proxy"]: e.get("resources") or {} for e in entries}


def in_sync(resources: dict[str, Any]) -> bool:
    return bool(resources) and all(
        r.get("sent") == r.get("acked") and not r.get("lastError") for r in resources.values()
    )


def istiod_metrics(mesh: Any) -> dict[str, float]:
    """istiod's Prometheus metrics (monitoring port): `name{labels}` -> value, for the pilot_*
    series the benchmarks read."""
    from prometheus_client.parser import text_string_to_metric_families

    url = f"http://127.0.0.1:{mesh.monitoring_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("pilot_"):
            continue
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()) if k != "le")
            if "le" in sample.labels:
                continue
            out[f"{sample.name}{{{labels}}}"] = sample.value
    return out


def histogram_delta(
    before: dict[str, float], after: dict[str, float], name: str
) -> dict[str, dict[str, float]]:
    """Per label set of histogram `name`: observations and their mean between two scrapes."""
    out: dict[str, dict[str, float]] = {}
    for key, value in after.items():
        if not key.startswith(f"{name}_count{{"):
            continue
        labels = key[len(name) + len("_count") :]
        count = value - before.get(key, 0.0)
        total = after.get(f"{name}_sum{labels}", 0.0) - before.get(f"{name}_sum{labels}", 0.0)
        if count > 0:
            out[labels.strip("{}") or "all"] = {"count": count, "mean_s": total / count}
    return out


class SidecarWatch:
    """Watches Sidecars of one namespace and keeps, per (Sidecar name, egress host), when this
    process first saw the host in it (the Sidecar's egress in the API server)."""

    def __init__(self, mesh: Any, namespace: str) -> None:
        self.mesh, self.namespace = mesh, namespace
        self.seen: dict[tuple[str, str], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sidecar-watch", daemon=True)

    def __enter__(self) -> SidecarWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    def _record(self, sidecar: dict[str, Any], now: float) -> None:
        name = sidecar["metadata"]["name"]
        for egress in sidecar.get("spec", {}).get("egress") or []:
            for host in egress.get("hosts") or []:
                self.seen.setdefault((name, host.split("/", 1)[-1]), now)

    def _run(self) -> None:
        path = f"/apis/networking.istio.io/v1/namespaces/{self.namespace}/sidecars"
        while not self._stop.is_set():
            try:
                listed = self.mesh.api.list(path)
                now = time.time()
                for item in listed.get("items", []):
                    self._record(item, now)
                rv = listed["metadata"]["resourceVersion"]
                for event in self.mesh.api.watch_lines(
                    path, resource_version=rv, timeout_seconds=30
                ):
                    if self._stop.is_set():
                        return
                    if event.get("type") in ("ADDED", "MODIFIED"):
                        self._record(event["object"], time.time())
            except Exception:  # a broken watch: list and watch again
                time.sleep(0.2)

    def holds(self, sidecar: str, host: str) -> bool:
        return (sidecar, host) in self.seen

    def count(self, sidecar: str) -> int:
        return sum(1 for name, _ in self.seen if name == sidecar)


def wait(probe: Any, what: str, timeout: float, interval: float = 0.2) -> Any:
    """Poll `probe()` until truthy; TimeoutError naming `what` (`common.wait_for`)."""
    return wait_for(probe, timeout=timeout, interval=interval, what=what)


def ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1000:.0f} ms"
