"""Pytest fixtures for the local Kubernetes API emulator (`lazyload_kube_emulator`).

`kube_emulator` (function-scoped) starts a fresh emulator on a random port in a background thread,
with the dev CRDs of `deploy/crds/istio/` and `deploy/crds/` preloaded, and yields a
`KubeEmulator`: `.url`, `.kubeconfig` (a written kubeconfig file), `.api_client()` (an official
client built from that kubeconfig), `.api_client_as(token)` (one with another bearer token), `.inject_fault(...)`, `.clear_faults()`, `.requests()`.
Override the `kube_emulator_crd_dirs` fixture to preload other CRDs and `kube_emulator_config`
to change settings (e.g. a short watch history), or call `start_kube_emulator(...)` directly for
another scope.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from lazyload_kube_emulator import EmulatorConfig, EmulatorHandle, RequestRecord, run_in_thread
from lazyload_kube_emulator.faults import Verb

__all__ = [
    "KubeEmulator",
    "default_crd_dirs",
    "faster_than",
    "kube_emulator",
    "kube_emulator_config",
    "kube_emulator_crd_dirs",
    "repo_root",
    "start_kube_emulator",
    "token_client",
]

WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE")


def repo_root(start: Path | None = None) -> Path:
    """The nearest directory above `start` (default: this file) that contains `deploy/crds`."""
    here = (start or Path(__file__)).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "deploy" / "crds").is_dir():
            return candidate
    raise FileNotFoundError(f"no directory above {here} contains deploy/crds")


def _has_manifests(directory: Path) -> bool:
    return directory.is_dir() and any(
        p.suffix in (".yaml", ".yml", ".json") for p in directory.iterdir() if p.is_file()
    )


def default_crd_dirs(root: Path | None = None) -> list[Path]:
    """`deploy/crds/istio/` and `deploy/crds/` of the repository, those that hold manifests."""
    crds = (root or repo_root()) / "deploy" / "crds"
    return [d for d in (crds / "istio", crds) if _has_manifests(d)]


def service_fence(
    name: str, namespace: str = "default", *, labels: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    """A ServiceFence manifest: enabled, plus the `spec` fields given (named as in the CRD,
    e.g. `workloadSelector={"fromService": True}`), and `labels` when given."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels:
        metadata["labels"] = labels
    return {
        "apiVersion": "microservice.slime.io/v1alpha1",
        "kind": "ServiceFence",
        "metadata": metadata,
        "spec": {"enable": True, **spec},
    }


def faster_than(times: Iterable[float], qps: float, burst: int, slack: float = 0.15) -> list[str]:
    """Where requests made at `times` (seconds) went faster than a client-side rate limit of `qps`
    a second after a burst of `burst` allows: j - i + 1 requests from the i-th to the j-th take
    at least (j - i + 1 - burst) / qps seconds. Empty when they kept to it.

    `slack`: how much earlier a request may be seen than the limit let it go (the server stamps
    a request when it handles it, and one held up on a busy machine narrows the gap to the next);
    an unlimited client misses by far more (20 requests of 10/s in 0.3 s: by 1.5 s)."""
    ordered = sorted(times)
    return [
        f"requests {i}..{j}: {ordered[j] - ordered[i]:.3f} s < {(j - i + 1 - burst) / qps:.3f} s"
        for i in range(len(ordered))
        for j in range(i + burst, len(ordered))
        if ordered[j] - ordered[i] < (j - i + 1 - burst) / qps - slack
    ]


def token_client(url: str, token: str | None, *, ca: Path | None = None) -> client.ApiClient:
    """An official-client ApiClient for `url` with bearer `token` (None: anonymous), trusting
    `ca` when given."""
    configuration = client.Configuration()
    configuration.host = url
    if ca is not None:
        configuration.ssl_ca_cert = str(ca)
    if token:
        configuration.api_key = {"authorization": token}
        configuration.api_key_prefix = {"authorization": "Bearer"}
    return client.ApiClient(configuration)


class ClientOwner:
    """A test API server's official-client ApiClients: each made by `api_client` (from the
    server's kubeconfig) or handed to `_owned` is closed by `close` (at teardown)."""

    kubeconfig: Path

    def __init__(self) -> None:
        self._clients: list[client.ApiClient] = []

    def api_client(self) -> client.ApiClient:
        """A new official-client ApiClient from the kubeconfig (closed at teardown)."""
        api = config.new_client_from_config(config_file=str(self.kubeconfig), persist_config=False)
        return self._owned(api)

    def _owned(self, api: client.ApiClient) -> client.ApiClient:
        self._clients.append(api)
        return api

    def close(self) -> None:
        for api in self._clients:
            api.close()
        self._clients.clear()


class KubeEmulator(ClientOwner):
    """A running emulator as tests see it."""

    kind = "emulator"

    def __init__(self, handle: EmulatorHandle, kubeconfig: Path) -> None:
        super().__init__()
        self.handle = handle
        self.url = handle.url
        self.kubeconfig = kubeconfig

    def api_client_as(self, token: str | None) -> client.ApiClient:
        """An ApiClient whose bearer token is `token` (None: no token), for an emulator started
        with `EmulatorConfig(authorize=True)`: `authz.service_account_token(ns, name)` is that
        ServiceAccount. Closed at teardown."""
        return self._owned(token_client(self.url, token))

    def service_account_token(self, namespace: str, name: str) -> str:
        """The bearer token the emulator's authorizer takes as that ServiceAccount."""
        from lazyload_kube_emulator.authz import service_account_token

        return service_account_token(namespace, name)

    def inject_fault(
        self, verb: Verb = "*", path_regex: str = ".*", **kwargs: Any
    ) -> dict[str, Any]:
        """Fail the next matching requests; kwargs: status, count, reason, retry_after, message."""
        return self.handle.inject_fault(verb, path_regex, **kwargs)

    def clear_faults(self) -> None:
        self.handle.clear_faults()

    def requests(self) -> list[RequestRecord]:
        """Recent API requests (verb, path, query, status, content_type), oldest first."""
        return self.handle.requests()

    def writes(self, path_contains: str = "") -> list[RequestRecord]:
        """The recorded POST/PUT/PATCH/DELETE requests whose path contains `path_contains`."""
        return [r for r in self.requests() if r.verb in WRITE_VERBS and path_contains in r.path]

    def clear_requests(self) -> None:
        self.handle.clear_requests()

    def reset(self) -> None:
        self.handle.reset()


@contextlib.contextmanager
def start_kube_emulator(
    kubeconfig_path: Path | None = None,
    crd_dirs: Iterable[Path] | None = None,
    emulator_config: EmulatorConfig | None = None,
) -> Iterator[KubeEmulator]:
    """Run an emulator (CRDs from `crd_dirs`, default `default_crd_dirs()`) for the block."""
    dirs = list(default_crd_dirs() if crd_dirs is None else crd_dirs)
    with contextlib.ExitStack() as stack:
        if kubeconfig_path is None:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kube-emulator-")))
            kubeconfig_path = tmp / "kubeconfig"
        handle = stack.enter_context(run_in_thread(dirs, config=emulator_config))
        emulator = KubeEmulator(handle, handle.write_kubeconfig(kubeconfig_path))
        stack.callback(emulator.close)
        yield emulator


@pytest.fixture
def kube_emulator_crd_dirs() -> list[Path]:
    """CRD directories the `kube_emulator` fixture preloads; override to change them."""
    return default_crd_dirs()


@pytest.fixture
def kube_emulator_config() -> EmulatorConfig | None:
    """Settings of the `kube_emulator` fixture (None: defaults); override to change them."""
    return None


@pytest.fixture
def kube_emulator(
    tmp_path: Path,
    kube_emulator_crd_dirs: list[Path],
    kube_emulator_config: EmulatorConfig | None,
) -> Iterator[KubeEmulator]:
    """A fresh Kubernetes API emulator for one test."""
    kubeconfig = tmp_path / "kubeconfig"
    with start_kube_emulator(kubeconfig, kube_emulator_crd_dirs, kube_emulator_config) as emulator:
        yield emulator
