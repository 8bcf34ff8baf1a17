"""Pytest fixtures for a real Kubernetes API server (etcd + kube-apiserver + kube-controller-manager).

One switch picks the API server of a whole test run: `LAZYLOAD_TEST_KUBE=real|emulator`. Unset,
it is `real` where `make setup` built the binaries (or `KUBEBUILDER_ASSETS` names them), else
`emulator`; `real` without the binaries is an error, never a silent fallback.

- `kube_cluster` (function-scoped): the API server of the run, as a `RealKube` or a
  `KubeEmulator` - both have `.kind`, `.url`, `.kubeconfig`, `.api_client()`,
  `.api_client_as(token)`, `.service_account_token(ns, name)`, `.requests()`, `.writes()` and
  `.clear_requests()`. On the real server every test starts from the state the server had when it
  came up: objects a test created are deleted (namespaces included) and CRDs it changed are put
  back. Tests that inject faults keep using `kube_emulator`.
- `real_kube` (function-scoped): the shared real server whatever the switch says (fails without
  the binaries); `real_kube_server` (session): the server itself, started once per run.
- `start_real_kube(directory, ...)`: a private control plane for a test that changes it (flags,
  CRDs, etcd compaction).

The real server writes an audit log (every request at `Metadata` level), from which `.requests()`
reads the same records the emulator's request log gives (verb, path, status, user).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
from kubernetes import client
from lazyload_cli.kube_real import KubeBinaries, RealControlPlane
from lazyload_cli.processes import ProcessGroup
from lazyload_common.kube import KubeApi, KubeError, KubeNotFound

from lazyload_testing.kube import (
    WRITE_VERBS,
    ClientOwner,
    KubeEmulator,
    repo_root,
    token_client,
)

__all__ = [
    "AuditRecord",
    "RealKube",
    "kube_cluster",
    "kube_mode",
    "real_kube",
    "real_kube_server",
    "start_real_kube",
]

AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
"""
HTTP_VERBS = {
    "create": "POST",
    "update": "PUT",
    "patch": "PATCH",
    "delete": "DELETE",
    "deletecollection": "DELETE",
}
# Objects the control plane itself keeps renewing; a reset leaves them alone.
KEEP_NAMESPACES = ("kube-system", "kube-node-lease")
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def kube_mode() -> Literal["real", "emulator"]:
    """`real` or `emulator`: the API server this run's integration tests use."""
    wanted = os.environ.get("LAZYLOAD_TEST_KUBE", "").strip().lower()
    if wanted in ("real", "emulator"):
        return wanted
    if wanted:
        raise pytest.UsageError(f"LAZYLOAD_TEST_KUBE={wanted!r}: expected real or emulator")
    return "real" if KubeBinaries.available(repo_root()) else "emulator"


@dataclass(frozen=True)
class AuditRecord:
    """One API request as the audit log saw it (the fields the emulator's records have)."""

    verb: str
    path: str
    query: str
    status: int
    user: str
    k8s_verb: str


@dataclass(frozen=True)
class _Resource:
    list_path: str
    prefix: str
    plural: str
    namespaced: bool

    def object_path(self, obj: dict[str, Any]) -> str:
        meta = obj["metadata"]
        if self.namespaced:
            return f"{self.prefix}/namespaces/{meta['namespace']}/{self.plural}/{meta['name']}"
        return f"{self.prefix}/{self.plural}/{meta['name']}"


class RealKube(ClientOwner):
    """A running real control plane as tests see it (`api_client`: as the admin)."""

    kind = "real"

    def __init__(self, plane: RealControlPlane, audit_log: Path) -> None:
        super().__init__()
        self.plane = plane
        self.url = plane.url
        self.kubeconfig = plane.kubeconfig
        self.audit_log = audit_log
        self._audit_offset = 0
        self._admin = KubeApi(self.api_client())
        self._baseline: set[str] = set()
        self._crds: dict[str, dict[str, Any]] = {}

    # -- clients -------------------------------------------------------------------------------

    def api_client_as(self, token: str | None) -> client.ApiClient:
        """An ApiClient whose bearer token is `token` (None: anonymous), e.g. a ServiceAccount's
        from `service_account_token`."""
        return self._owned(token_client(self.url, token, ca=self.plane.pki.ca))

    def service_account_token(self, namespace: str, name: str) -> str:
        """A TokenRequest token of the ServiceAccount (which must exist)."""
        return self.plane.service_account_token(namespace, name)

    def kubeconfig_for(self, namespace: str, name: str, path: Path) -> Path:
        return self.plane.kubeconfig_for(namespace, name, path)

    @property
    def etcd_url(self) -> str:
        return self.plane.etcd_url

    # -- the audit log -------------------------------------------------------------------------

    def requests(self) -> list[AuditRecord]:
        """API requests since the last `clear_requests()`, oldest first."""
        records = []
        with self.audit_log.open("rb") as f:
            f.seek(self._audit_offset)
            for line in f:
                event = json.loads(line)
                uri = event.get("requestURI", "")
                path, _, query = uri.partition("?")
                records.append(
                    AuditRecord(
                        verb=HTTP_VERBS.get(event["verb"], "GET"),
                        path=path,
                        query=query,
                        status=int(event.get("responseStatus", {}).get("code", 0)),
                        user=event.get("user", {}).get("username", ""),
                        k8s_verb=event["verb"],
                    )
                )
        return records

    def writes(self, path_contains: str = "") -> list[AuditRecord]:
        return [r for r in self.requests() if r.verb in WRITE_VERBS and path_contains in r.path]

    def clear_requests(self) -> None:
        self._audit_offset = self.audit_log.stat().st_size if self.audit_log.exists() else 0

    # -- back to the start state ---------------------------------------------------------------

    def _resources(self) -> list[_Resource]:
        """Every listable, deletable resource, each once, at the first version of its group
        that serves it (preferred first: a kind missing from the preferred version, such as
        EnvoyFilter, only v1alpha3, is found at another)."""
        found: dict[tuple[str, str], _Resource] = {}
        prefixes = ["/api/v1"]
        for group in self._admin.get("/apis").get("groups", []):
            preferred = group["preferredVersion"]["groupVersion"]
            versions = [v["groupVersion"] for v in group.get("versions", [])]
            prefixes += [f"/apis/{v}" for v in (preferred, *versions)]
        for prefix in dict.fromkeys(prefixes):
            group = prefix.split("/")[2] if prefix.startswith("/apis/") else ""
            for resource in self._admin.get(prefix).get("resources", []):
                verbs = set(resource.get("verbs", []))
                if "/" in resource["name"] or not {"list", "delete"} <= verbs:
                    continue
                found.setdefault(
                    (group, resource["name"]),
                    _Resource(
                        f"{prefix}/{resource['name']}",
                        prefix,
                        resource["name"],
                        bool(resource.get("namespaced")),
                    ),
                )
        return list(found.values())

    def _objects(self) -> Iterator[tuple[_Resource, dict[str, Any]]]:
        for resource in self._resources():
            try:
                items = self._admin.list(resource.list_path).get("items", [])
            except KubeError:
                continue
            for obj in items:
                obj.setdefault("metadata", {})
                yield resource, obj

    def snapshot(self) -> None:
        """Remember what exists now as the state `reset()` goes back to."""
        self._baseline = {r.object_path(o) for r, o in self._objects()}
        self._crds = {c["metadata"]["name"]: c for c in self._admin.list(CRD_PATH)["items"]}

    def reset(self) -> None:
        """Delete what tests created, put back CRDs they changed (objects of the CRDs stay)."""
        namespaces = []
        for resource, obj in list(self._objects()):
            path = resource.object_path(obj)
            if path in self._baseline:
                continue
            if obj["metadata"].get("namespace") in KEEP_NAMESPACES and not self._custom(resource):
                continue  # the control plane's own objects; a test's custom objects there go
            if resource.list_path == "/api/v1/namespaces":
                namespaces.append(obj["metadata"]["name"])
                continue
            self._delete(path, obj)
        for name, crd in self._crds.items():
            self._restore_crd(name, crd)
        for name in namespaces:
            self._delete_namespace(name)

    def _custom(self, resource: _Resource) -> bool:
        """Whether `resource` is served by a CRD (`/apis/<group>/<version>` + plural)."""
        group = resource.prefix.split("/")[2] if resource.prefix.startswith("/apis/") else ""
        return f"{resource.plural}.{group}" in self._crds

    def _delete(self, path: str, obj: dict[str, Any]) -> None:
        with contextlib.suppress(KubeNotFound):
            if obj["metadata"].get("finalizers"):
                self._admin.merge_patch(path, {"metadata": {"finalizers": None}})
            self._admin.delete(path)

    def _restore_crd(self, name: str, crd: dict[str, Any]) -> None:
        try:
            current = self._admin.get(f"{CRD_PATH}/{name}")
        except KubeNotFound:
            body = {k: v for k, v in crd.items() if k != "status"}
            body["metadata"] = {"name": name, "labels": crd["metadata"].get("labels", {})}
            self._admin.create(CRD_PATH, body)
            return
        if current["metadata"]["resourceVersion"] == crd["metadata"]["resourceVersion"]:
            return
        if current.get("spec") != crd.get("spec"):
            body = {**crd, "metadata": {**crd["metadata"]}}
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            body.pop("status", None)
            self._admin.replace(f"{CRD_PATH}/{name}", body)
        self._crds[name] = self._admin.get(f"{CRD_PATH}/{name}")

    def _delete_namespace(self, name: str) -> None:
        """Delete an emptied namespace now: the finalize call the namespace controller makes."""
        path = f"/api/v1/namespaces/{name}"
        with contextlib.suppress(KubeNotFound):
            self._admin.delete(path)
            current = self._admin.get(path)
            current["spec"]["finalizers"] = []
            self._admin.replace(f"{path}/finalize", current)


@contextlib.contextmanager
def start_real_kube(
    directory: Path,
    *,
    crds: Iterable[Path] | None = None,
    extra_apiserver_args: Iterable[str] = (),
) -> Iterator[RealKube]:
    """etcd + kube-apiserver (+ kube-controller-manager) in `directory` for the block."""
    directory.mkdir(parents=True, exist_ok=True)
    policy = directory / "audit-policy.yaml"
    policy.write_text(AUDIT_POLICY)
    audit_log = directory / "audit.log"
    processes = ProcessGroup(directory / "logs")
    try:
        plane = RealControlPlane(
            repo_root(),
            directory,
            processes,
            fsync=False,
            extra_apiserver_args=[
                f"--audit-policy-file={policy}",
                f"--audit-log-path={audit_log}",
                "--audit-log-format=json",
                "--audit-log-mode=blocking",
                "--audit-log-maxbackup=0",
                *extra_apiserver_args,
            ],
        )
        plane.start(crds=crds)
        real = RealKube(plane, audit_log)
        try:
            real.snapshot()
            yield real
        finally:
            real.close()
    finally:
        processes.stop()


@pytest.fixture(scope="session")
def real_kube_server() -> Iterator[RealKube]:
    """The run's shared real control plane (started at its first use)."""
    if not KubeBinaries.available(repo_root()):
        KubeBinaries.find(repo_root())  # raises with what is missing and how to get it
    with (
        tempfile.TemporaryDirectory(prefix="lazyload-kube-") as tmp,
        start_real_kube(Path(tmp)) as real,
    ):
        yield real


@pytest.fixture
def real_kube(real_kube_server: RealKube) -> Iterator[RealKube]:
    """The shared real server, back in its start state, with an empty request record."""
    real_kube_server.reset()
    real_kube_server.clear_requests()
    yield real_kube_server


@pytest.fixture
def kube_cluster(request: pytest.FixtureRequest) -> RealKube | KubeEmulator:
    """The API server of this run (`LAZYLOAD_TEST_KUBE`): the shared real server, reset, or a
    fresh emulator."""
    if kube_mode() == "real":
        return request.getfixturevalue("real_kube")
    return request.getfixturevalue("kube_emulator")
