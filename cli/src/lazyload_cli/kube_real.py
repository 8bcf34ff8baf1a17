"""A real Kubernetes control plane on loopback: etcd, kube-apiserver and kube-controller-manager.

`lazyload up --kube real` and the test fixtures (`lazyload_testing.kube`) run the binaries that
`make setup` builds from Go modules into `.tools/bin/` (or those of `KUBEBUILDER_ASSETS`, the
envtest convention). The API server is set up as kubeadm sets one up, minus the nodes:

- TLS from a private CA made here; clients authenticate with certificates (the admin kubeconfig is
  `system:masters`) or ServiceAccount tokens (TokenRequest works: the signing keys are made here);
  authorization is `RBAC`;
- Services get ClusterIPs from `10.96.0.0/12`;
- kube-controller-manager (when built) runs only the garbage collector and the namespace,
  ServiceAccount and ClusterRole aggregation controllers (the last fills `view`, `edit` and
  `admin` with the rules of the ClusterRoles labelled for them): there are no kubelets, and the endpoints controllers would empty the
  Endpoints that tests write by hand;
- the ServiceFence CRD of `deploy/crds/` and Istio's own CRDs are installed and Established before
  the control plane is handed over.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import os
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lazyload_cli.ports import free_ports
from lazyload_cli.processes import ProcessGroup, StackError

SERVICE_CIDR = "10.96.0.0/12"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
API_AUDIENCES = (SERVICE_ACCOUNT_ISSUER, "istio-ca")
CONTROLLERS = ("garbagecollector", "namespace", "serviceaccount", "clusterrole-aggregation")
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
ISTIO_CRDS = Path(".tools/share/istio/crd-all.gen.yaml")


@dataclass(frozen=True)
class KubeBinaries:
    """Where the control plane's binaries are; `controller_manager` is None when not built."""

    etcd: Path
    apiserver: Path
    controller_manager: Path | None

    @classmethod
    def find(cls, root: Path) -> KubeBinaries:
        """From `KUBEBUILDER_ASSETS` if it names a directory, else `<root>/.tools/bin`."""
        assets = os.environ.get("KUBEBUILDER_ASSETS")
        directory = Path(assets) if assets else root / ".tools" / "bin"
        etcd, apiserver = directory / "etcd", directory / "kube-apiserver"
        missing = [p.name for p in (etcd, apiserver) if not os.access(p, os.X_OK)]
        if missing:
            hint = (
                "KUBEBUILDER_ASSETS must name a directory with kube-apiserver and etcd"
                if assets
                else "run `make setup` (it builds them with Go)"
            )
            raise StackError(f"{' and '.join(missing)} not found in {directory}: {hint}")
        manager = directory / "kube-controller-manager"
        return cls(etcd, apiserver, manager if os.access(manager, os.X_OK) else None)

    @classmethod
    def available(cls, root: Path) -> bool:
        try:
            cls.find(root)
        except StackError:
            return False
        return True


def crd_files(root: Path) -> list[Path]:
    """The ServiceFence CRD and Istio's CRDs (the pinned release's own, copied by `make setup`;
    without them, the development CRDs of `deploy/crds/istio/`)."""
    istio = root / ISTIO_CRDS
    dev = sorted((root / "deploy" / "crds" / "istio").glob("*.yaml"))
    return [root / "deploy" / "crds" / "servicefence.yaml", *([istio] if istio.exists() else dev)]


# -- certificates ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """Files of the control plane's CA, serving and client certificates and SA signing keys."""

    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def admin(self) -> tuple[Path, Path]:
        return self.directory / "admin.crt", self.directory / "admin.key"

    def admin_tls(self) -> ssl.SSLContext:
        """A client TLS context that trusts the CA and presents the admin certificate."""
        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(*(str(p) for p in self.admin))
        return context

    def create(self) -> Pki:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        from lazyload_cli import pki

        self.directory.mkdir(parents=True, exist_ok=True)
        year = datetime.timedelta(days=365)

        def write(name: str, data: bytes) -> None:
            path = self.directory / name
            path.write_bytes(data)
            path.chmod(0o600)

        ca = pki.certificate_authority("lazyload-kube-ca", lifetime=10 * year)
        write("ca.crt", pki.cert_pem(ca[1]))
        write("ca.key", pki.key_pem(ca[0]))
        api_names = (
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "127.0.0.1",
            "10.96.0.1",
        )
        for stem, subject, sans in (
            ("apiserver", pki.name("kube-apiserver"), [pki.general_name(n) for n in api_names]),
            ("admin", pki.name("lazyload-admin", ["system:masters"]), []),
        ):
            key, cert = pki.leaf(subject, ca, lifetime=year, server=bool(sans), sans=sans)
            write(f"{stem}.crt", pki.cert_pem(cert))
            write(f"{stem}.key", pki.key_pem(key))
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        write("sa.key", pki.key_pem(sa_key))
        write(
            "sa.pub",
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )
        return self


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(
    path: Path,
    server: str,
    ca: Path,
    *,
    user: str,
    cert: tuple[Path, Path] | None = None,
    token: str | None = None,
    namespace: str = "default",
) -> Path:
    """A one-context kubeconfig for `server`, authenticating by client certificate or token."""
    credentials: dict[str, str] = {}
    if cert is not None:
        credentials = {
            "client-certificate-data": _b64(cert[0]),
            "client-key-data": _b64(cert[1]),
        }
    if token is not None:
        credentials["token"] = token
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "lazyload-real",
                "cluster": {"server": server, "certificate-authority-data": _b64(ca)},
            }
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [
            {
                "name": "lazyload-real",
                "context": {"cluster": "lazyload-real", "user": user, "namespace": namespace},
            }
        ],
        "current-context": "lazyload-real",
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(document, sort_keys=False))
    tmp.chmod(0o600)
    tmp.replace(path)
    return path


# -- the control plane -------------------------------------------------------------------------


class RealControlPlane:
    """etcd + kube-apiserver (+ kube-controller-manager) run by a `ProcessGroup`."""

    def __init__(
        self,
        root: Path,
        state_dir: Path,
        processes: ProcessGroup,
        *,
        host: str = "127.0.0.1",
        apiserver_port: int | None = None,
        extra_apiserver_args: Iterable[str] = (),
        fsync: bool = True,
    ) -> None:
        self.root = root
        self.state_dir = state_dir
        self.processes = processes
        self.host = host
        self.binaries = KubeBinaries.find(root)
        etcd_client, etcd_peer, api = free_ports(3, host)
        self.etcd_client_port = etcd_client
        self.etcd_peer_port = etcd_peer
        self.apiserver_port = apiserver_port or api
        self.extra_apiserver_args = list(extra_apiserver_args)
        self.fsync = fsync
        self.pki = Pki(state_dir / "pki")
        self.kubeconfig = state_dir / "kubeconfig"

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.apiserver_port}"

    @property
    def etcd_url(self) -> str:
        return f"http://{self.host}:{self.etcd_client_port}"

    def start(self, *, crds: Iterable[Path] | None = None, progress: Any = None) -> None:
        say = progress or (lambda _m: None)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if not self.pki.ca.exists():
            self.pki.create()
        say("starting etcd")
        self._start_etcd()
        say("starting kube-apiserver")
        self._start_apiserver()
        write_kubeconfig(
            self.kubeconfig, self.url, self.pki.ca, user="lazyload-admin", cert=self.pki.admin
        )
        if self.binaries.controller_manager is not None:
            say(
                "starting kube-controller-manager (garbage collector, namespaces, role aggregation)"
            )
            self._start_controller_manager()
        self._wait_default_service_account()
        say("installing the ServiceFence and Istio CRDs")
        self.install_crds(crd_files(self.root) if crds is None else crds)

    def _start_etcd(self) -> None:
        data = self.state_dir / "etcd"
        peer = f"http://{self.host}:{self.etcd_peer_port}"
        cmd = [
            str(self.binaries.etcd),
            "--name=lazyload",
            f"--data-dir={data}",
            f"--listen-client-urls={self.etcd_url}",
            f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=lazyload={peer}",
            "--log-level=warn",
        ]
        if not self.fsync:
            cmd.append("--unsafe-no-fsync")
        self.processes.spawn("etcd", cmd)
        self.processes.wait_http("etcd", f"{self.etcd_url}/health", timeout=30)

    def _start_apiserver(self) -> None:
        pki = self.pki.directory
        cmd = [
            str(self.binaries.apiserver),
            f"--etcd-servers={self.etcd_url}",
            f"--bind-address={self.host}",
            f"--advertise-address={self.host}",
            f"--secure-port={self.apiserver_port}",
            f"--cert-dir={self.state_dir / 'apiserver-certs'}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={self.pki.ca}",
            "--authorization-mode=RBAC",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--api-audiences={','.join(API_AUDIENCES)}",
            # No kubelets: the `kubernetes` Service gets no endpoints (a loopback address would be
            # refused by Endpoints validation anyway).
            "--endpoint-reconciler-type=none",
            "--profiling=false",
            *self.extra_apiserver_args,
        ]
        self.processes.spawn("kube-apiserver", cmd)
        self.processes.wait_http(
            "kube-apiserver", f"{self.url}/readyz", timeout=120, verify=self.pki.admin_tls()
        )

    def _start_controller_manager(self) -> None:
        assert self.binaries.controller_manager is not None
        cmd = [
            str(self.binaries.controller_manager),
            f"--kubeconfig={self.kubeconfig}",
            f"--controllers={','.join(CONTROLLERS)}",
            "--leader-elect=false",
            "--secure-port=0",
            "--use-service-account-credentials=false",
            f"--root-ca-file={self.pki.ca}",
            "--profiling=false",
        ]
        self.processes.spawn("kube-controller-manager", cmd)

    def _wait_default_service_account(self, timeout: float = 60.0) -> None:
        """Pods need their namespace's `default` ServiceAccount: wait for the controller to make
        the one of `default` (without kube-controller-manager, make it here)."""
        from lazyload_common.kube import KubeConflict, KubeNotFound

        path = "/api/v1/namespaces/default/serviceaccounts"
        kube = self.admin_api()
        try:
            if self.binaries.controller_manager is None:
                with contextlib.suppress(KubeConflict):
                    kube.create(path, {"metadata": {"name": "default"}})
            deadline = time.monotonic() + timeout
            while True:
                try:
                    kube.get(f"{path}/default")
                    return
                except KubeNotFound:
                    if time.monotonic() > deadline:
                        raise StackError(
                            "kube-controller-manager made no default ServiceAccount within "
                            f"{timeout}s; log {self.processes.process('kube-controller-manager').log_path}"
                        ) from None
                    time.sleep(0.1)
        finally:
            kube.api.close()

    # -- objects -------------------------------------------------------------------------------

    def admin_api(self) -> Any:
        """A `lazyload_common.kube.KubeApi` authenticated as the admin (close `.api` after use)."""
        from lazyload_common.kube import KubeApi, api_client
        from lazyload_common.settings import KubeSettings

        return KubeApi(api_client(KubeSettings(kubeconfig=self.kubeconfig)))

    def install_crds(self, files: Iterable[Path], *, timeout: float = 60.0) -> list[str]:
        """Create (or replace) every CRD in `files` and wait until all are Established."""
        from lazyload_common.kube import KubeConflict

        names: list[str] = []
        kube = self.admin_api()
        try:
            for path in files:
                for doc in yaml.safe_load_all(path.read_text()):
                    if not doc or doc.get("kind") != "CustomResourceDefinition":
                        continue
                    name = doc["metadata"]["name"]
                    names.append(name)
                    try:
                        kube.create(CRD_PATH, doc)
                    except KubeConflict:
                        current = kube.get(f"{CRD_PATH}/{name}")
                        doc["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                        kube.replace(f"{CRD_PATH}/{name}", doc)
            deadline = time.monotonic() + timeout
            pending = set(names)
            while pending:
                for item in kube.list(CRD_PATH).get("items", []):
                    conditions = (item.get("status") or {}).get("conditions") or []
                    if any(
                        c.get("type") == "Established" and c.get("status") == "True"
                        for c in conditions
                    ):
                        pending.discard(item["metadata"]["name"])
                if pending and time.monotonic() > deadline:
                    raise StackError(f"CRDs not Established within {timeout}s: {sorted(pending)}")
                if pending:
                    time.sleep(0.1)
        finally:
            kube.api.close()
        return names

    def service_account_token(
        self, namespace: str, name: str, *, audiences: Iterable[str] = (), seconds: int = 3600
    ) -> str:
        """A token of ServiceAccount `namespace/name` by TokenRequest (the account must exist)."""
        kube = self.admin_api()
        try:
            body: dict[str, Any] = {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": seconds},
            }
            if audiences:
                body["spec"]["audiences"] = list(audiences)
            answer = kube.create(
                f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", body
            )
        finally:
            kube.api.close()
        return str(answer["status"]["token"])

    def kubeconfig_for(self, namespace: str, name: str, path: Path) -> Path:
        """A kubeconfig that authenticates as ServiceAccount `namespace/name`."""
        token = self.service_account_token(namespace, name)
        return write_kubeconfig(
            path,
            self.url,
            self.pki.ca,
            user=f"system:serviceaccount:{namespace}:{name}",
            token=token,
            namespace=namespace,
        )
