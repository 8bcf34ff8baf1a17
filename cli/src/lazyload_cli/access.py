"""Where the operator commands (`explain`, `status`, `graph`, `events`) read from.

Two targets, one interface:

- a local stack (`--state-dir`): its `endpoints.json` gives the services' admin URLs, the
  kubeconfig, the NATS URL and (when the stack has NATS authentication) the credentials of each
  identity (`nats_credentials`);
- a cluster (`--kubeconfig`/`--context`, else `KUBECONFIG`, in-cluster or `~/.kube/config`):
  ServiceFences, Sidecars and Events come from the Kubernetes API, and the services' admin APIs
  are reached through the API server's pod proxy
  (`/api/v1/namespaces/<ns>/pods/<pod>:<admin port>/proxy/...`) - no port-forward. The pods are
  those the chart labels `app.kubernetes.io/part-of=lazyload` and
  `app.kubernetes.io/component=<service>` in lazyload's namespace (`--lazyload-namespace`).

Every failure leaves as `AccessError` with the exit code the CLI documents.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from kubernetes import config as kube_config
from lazyload_common import kube, natsauth
from lazyload_common.adminauth import PROXIED_AUTHORIZATION
from lazyload_common.settings import KubeSettings

SERVICES = ("accesslog-ingest", "fence-reconciler", "sidecar-writer", "global-pilot")
FENCES = "/apis/microservice.slime.io/v1alpha1"
SIDECARS = "/apis/networking.istio.io/v1"
TIMEOUT = 10.0

EXIT_FAILED = 1
EXIT_NO_STATE = 3
"""No stack state in --state-dir, or no kubeconfig to read."""
EXIT_UNKNOWN = 4
"""No such fence (or workload or service)."""
EXIT_UNREACHABLE = 5
"""A service, NATS or the Kubernetes API cannot be reached."""


class AccessError(RuntimeError):
    """A command cannot read what it needs; `code` is its exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


def read_endpoints(state_dir: Path) -> dict[str, Any]:
    """`<state_dir>/endpoints.json`, or `AccessError` (exit 3)."""
    path = state_dir / "endpoints.json"
    try:
        endpoints = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise AccessError(
            f"no lazyload stack state in {state_dir} ({path} is missing)", EXIT_NO_STATE
        ) from e
    except (OSError, ValueError) as e:
        raise AccessError(f"unreadable {path}: {e}", EXIT_NO_STATE) from e
    if not isinstance(endpoints, dict):
        raise AccessError(f"{path} is not a JSON object", EXIT_NO_STATE)
    return endpoints


def nats_connect_options(endpoints: dict[str, Any], identity: str = "observer") -> dict[str, Any]:
    """The keyword arguments of `nats.connect` to reach a stack's NATS as `identity`
    (`natsauth.endpoint_options`: its URL and, when `endpoints.json` has `nats_credentials`,
    that identity's credential and inbox prefix); `AccessError` (exit 3) when it has none."""
    if not endpoints.get("nats_url"):
        raise AccessError("endpoints.json has no nats_url", EXIT_NO_STATE)
    try:
        return natsauth.endpoint_options(endpoints, identity)
    except (KeyError, ValueError) as e:
        raise AccessError(f"endpoints.json: {e}", EXIT_NO_STATE) from e


@dataclass
class Target:
    """A local stack or a cluster (see the module docstring)."""

    kube: kube.KubeApi
    description: str
    admin_urls: dict[str, str] = field(default_factory=dict)
    """Local: service -> admin base URL. Empty for a cluster (the pod proxy is used)."""
    namespace: str = "mesh-operator"
    """Cluster: where lazyload's pods run."""
    endpoints: dict[str, Any] | None = None

    @classmethod
    def local(cls, state_dir: Path) -> Target:
        endpoints = read_endpoints(state_dir)
        admins = endpoints.get("admin")
        kubeconfig = endpoints.get("kubeconfig")
        if not isinstance(admins, dict) or not kubeconfig:
            raise AccessError(
                f"{state_dir}/endpoints.json has no admin URLs or kubeconfig", EXIT_NO_STATE
            )
        api = _kube_api(KubeSettings(kubeconfig=Path(str(kubeconfig))))
        return cls(
            kube=api,
            description=f"the stack in {state_dir}",
            admin_urls={str(k): str(v) for k, v in admins.items()},
            endpoints=endpoints,
        )

    @classmethod
    def cluster(cls, kubeconfig: Path | None, context: str | None, namespace: str) -> Target:
        if kubeconfig is not None and not kubeconfig.exists():
            raise AccessError(f"no kubeconfig at {kubeconfig}", EXIT_NO_STATE)
        api = _kube_api(KubeSettings(kubeconfig=kubeconfig, context=context))
        where = f"context {context}" if context else "the current context"
        return cls(kube=api, description=f"the cluster of {where}", namespace=namespace)

    # -- Kubernetes ------------------------------------------------------------------------

    def get(self, path: str) -> dict[str, Any] | None:
        """The object at `path`, None when there is none."""
        try:
            return self._kube(self.kube.get, path)
        except AccessError as e:
            if e.status == 404:
                return None
            raise

    def list(self, path: str, **query: Any) -> list[dict[str, Any]]:
        """The items at `path` (an API that is not served, e.g. no Istio CRDs: none)."""
        try:
            return list(self._kube(self.kube.list, path, **query).get("items") or [])
        except AccessError as e:
            if e.status == 404:
                return []
            raise

    def _kube(self, call: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            return dict(call(*args, **kwargs))
        except kube.KubeError as e:
            raise AccessError(f"Kubernetes API: {e}", EXIT_FAILED, e.status) from e
        except Exception as e:  # urllib3, TLS, DNS: the API server cannot be reached
            host = self.kube.api.configuration.host
            raise AccessError(
                f"cannot reach the Kubernetes API at {host}: {e}", EXIT_UNREACHABLE
            ) from e

    # -- the services' admin APIs ----------------------------------------------------------

    def admin_get(
        self, service: str, path: str, params: dict[str, str] | None = None
    ) -> list[tuple[str, int, bytes]]:
        """GET `path` of every instance of `service`'s admin API: (instance, status, body) each
        (a local stack has one instance). `AccessError` (exit 5) when none can be reached."""
        if self.admin_urls:
            url = self.admin_urls.get(service)
            if url is None:
                raise AccessError(f"endpoints.json names no admin URL of {service}", EXIT_NO_STATE)
            try:
                response = httpx.get(url.rstrip("/") + path, params=params, timeout=TIMEOUT)
            except httpx.HTTPError as e:
                raise AccessError(f"cannot reach {service} at {url}: {e}", EXIT_UNREACHABLE) from e
            return [(service, response.status_code, response.content)]
        out = [self._proxy_get(pod, port, path, params) for pod, port in self._pods(service)]
        if not out:
            raise AccessError(
                f"no running {service} pod in namespace {self.namespace}", EXIT_UNREACHABLE
            )
        return out

    def admin_json(
        self, service: str, path: str, params: dict[str, str] | None = None
    ) -> list[Any]:
        """The JSON bodies of the instances that answered 200 to `path`."""
        bodies = []
        failures = []
        for instance, status, body in self.admin_get(service, path, params):
            if status == 200:
                bodies.append(json.loads(body))
            else:
                failures.append(f"{instance}: {status} {body[:200]!r}")
        if not bodies and failures:
            raise AccessError(f"{service} {path}: {'; '.join(failures)}", EXIT_FAILED, 0)
        return bodies

    def admin_post(self, service: str, path: str, *, token: str) -> tuple[str, int, bytes]:
        """POST `path` to one instance of `service`'s admin API with bearer `token` (a change any
        replica makes for all, e.g. a fence reset): (instance, status, body). Through the pod
        proxy the token goes in `X-Lazyload-Authorization`, as the API server removes the
        `Authorization` header of a request it has authenticated. `AccessError` (exit 5) when no
        instance can be reached."""
        if self.admin_urls:
            url = self.admin_urls.get(service)
            if url is None:
                raise AccessError(f"endpoints.json names no admin URL of {service}", EXIT_NO_STATE)
            headers = {"Authorization": f"Bearer {token}"}
            try:
                response = httpx.post(url.rstrip("/") + path, headers=headers, timeout=TIMEOUT)
            except httpx.HTTPError as e:
                raise AccessError(f"cannot reach {service} at {url}: {e}", EXIT_UNREACHABLE) from e
            return service, response.status_code, response.content
        pods = list(self._pods(service))
        if not pods:
            raise AccessError(
                f"no running {service} pod in namespace {self.namespace}", EXIT_UNREACHABLE
            )
        pod, port = pods[0]
        headers = {PROXIED_AUTHORIZATION: f"Bearer {token}"}
        return self._proxy("POST", pod, port, path, None, headers)

    def bearer_token(self) -> str | None:
        """The bearer token the kubeconfig's user authenticates with (a token, an exec plugin's
        or OIDC's); None for a client certificate."""
        configuration = self.kube.api.configuration
        value = configuration.get_api_key_with_prefix("BearerToken", alias="authorization") or ""
        scheme, _, token = value.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None

    def _pods(self, service: str) -> Iterator[tuple[str, int]]:
        selector = f"app.kubernetes.io/part-of=lazyload,app.kubernetes.io/component={service}"
        pods = self.list(f"/api/v1/namespaces/{self.namespace}/pods", labelSelector=selector)
        for pod in pods:
            if (pod.get("status") or {}).get("phase") != "Running":
                continue
            for container in (pod.get("spec") or {}).get("containers") or []:
                for port in container.get("ports") or []:
                    if port.get("name") == "admin":
                        yield pod["metadata"]["name"], int(port["containerPort"])

    def _proxy_get(
        self, pod: str, port: int, path: str, params: dict[str, str] | None
    ) -> tuple[str, int, bytes]:
        return self._proxy("GET", pod, port, path, params)

    def _proxy(
        self,
        method: str,
        pod: str,
        port: int,
        path: str,
        params: dict[str, str] | None,
        headers: dict[str, str] | None = None,
    ) -> tuple[str, int, bytes]:
        api = self.kube.api
        proxy = f"/api/v1/namespaces/{self.namespace}/pods/{pod}:{port}/proxy{path}"
        request = api.param_serialize(
            method,
            proxy,
            query_params=list((params or {}).items()),
            header_params={"Accept": "*/*", **(headers or {})},
            auth_settings=["BearerToken"],
        )
        try:
            response = api.call_api(*request, _request_timeout=TIMEOUT)
            return pod, int(response.status), bytes(response.read())
        except Exception as e:
            raise AccessError(
                f"cannot reach {pod} through the API server's pod proxy: {e}", EXIT_UNREACHABLE
            ) from e


def _kube_api(settings: KubeSettings) -> kube.KubeApi:
    try:
        client = kube.api_client(settings)
    except (kube_config.ConfigException, OSError, ValueError) as e:
        raise AccessError(f"no usable kubeconfig: {e}", EXIT_NO_STATE) from e
    return kube.KubeApi(client, timeout=TIMEOUT)
