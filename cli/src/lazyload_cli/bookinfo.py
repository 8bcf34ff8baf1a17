"""The demo's small bookinfo-like mesh: productpage -> details, productpage -> reviews -> ratings.

Each "service" is a tiny HTTP server on its own address (its pod IP: a loopback address with the
emulator, one of `podnet.PodNetwork` with a real API server, which refuses loopback endpoints). It
is registered in the Kubernetes API (Service, Endpoints, EndpointSlice, Pod with its status). A service that calls another does what a
fenced workload's sidecar does for a host it does not know yet: it sends the call to the
global-sidecar with `Host: <name>:<port>` and `Slime-Source-Ns`, from its own pod IP.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

import httpx
from lazyload_common.kube import KubeApi, KubeConflict

from lazyload_cli import ports

NAMESPACE = "default"
SERVICE_PORT = 9080
CALLS: dict[str, list[str]] = {
    "productpage": ["details", "reviews"],
    "details": [],
    "reviews": ["ratings"],
    "ratings": [],
}
POD_IPS = {name: f"127.0.10.{i}" for i, name in enumerate(CALLS, start=1)}


@dataclass
class MiniService:
    """One tiny HTTP server of the demo mesh."""

    name: str
    ip: str
    port: int
    global_sidecar: str
    first_calls: dict[str, float] = field(default_factory=dict)
    server: ThreadingHTTPServer | None = None

    def call(self, target: str) -> int:
        """Call `target` the way an unfenced-for-it workload does: through the global-sidecar."""
        self.first_calls.setdefault(target, time.time())
        transport = httpx.HTTPTransport(local_address=self.ip)
        with httpx.Client(transport=transport, timeout=5.0) as client:
            response = client.get(
                f"http://{self.global_sidecar}/",
                headers={"Host": f"{target}:{SERVICE_PORT}", "Slime-Source-Ns": NAMESPACE},
            )
        return response.status_code

    def handle(self) -> tuple[int, str]:
        statuses = {target: self.call(target) for target in CALLS[self.name]}
        ok = all(status == 200 for status in statuses.values())
        return (200 if ok else 502), f"{self.name} ok; calls: {statuses}\n"


def _handler(service: MiniService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = service.handle()
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


@contextmanager
def running_mesh(
    global_sidecar: str, pod_ips: dict[str, str] | None = None
) -> Iterator[dict[str, MiniService]]:
    """Start the tiny servers, each on its pod IP (default `POD_IPS`) and a free port."""
    services: dict[str, MiniService] = {}
    threads = []
    try:
        for name, ip in (pod_ips or POD_IPS).items():
            service = MiniService(name, ip, ports.free_port(ip), global_sidecar)
            service.server = ThreadingHTTPServer((ip, service.port), _handler(service))
            thread = threading.Thread(
                target=service.server.serve_forever, daemon=True, name=f"mesh:{name}"
            )
            thread.start()
            services[name], threads = service, [*threads, thread]
        yield services
    finally:
        for service in services.values():
            if service.server is not None:
                service.server.shutdown()
                service.server.server_close()


class Registered(Protocol):
    """What `register` needs of a service (a `MiniService`, or a benchmark's node)."""

    name: str
    ip: str
    port: int


def register(kube: KubeApi, services: Mapping[str, Registered]) -> None:
    """Create the Services, Pods, Endpoints and EndpointSlices of the mesh (idempotent)."""
    for service in services.values():
        labels = {"app": service.name}
        ns = NAMESPACE
        _apply(
            kube,
            f"/api/v1/namespaces/{ns}/pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"{service.name}-v1", "namespace": ns, "labels": labels},
                "spec": {"containers": [{"name": service.name, "image": "lazyload/demo"}]},
            },
            replace=False,
        )
        # A create drops `status` (a subresource), on a real API server as on the emulator.
        kube.merge_patch(
            f"/api/v1/namespaces/{ns}/pods/{service.name}-v1/status",
            {"status": {"phase": "Running", "podIP": service.ip, "podIPs": [{"ip": service.ip}]}},
        )
        _apply(
            kube,
            f"/api/v1/namespaces/{ns}/services",
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": service.name, "namespace": ns, "labels": labels},
                "spec": {
                    "selector": labels,
                    "ports": [
                        {
                            "name": "http",
                            "port": SERVICE_PORT,
                            "targetPort": service.port,
                            "protocol": "TCP",
                        }
                    ],
                },
            },
        )
        target = {"kind": "Pod", "name": f"{service.name}-v1", "namespace": ns}
        _apply(
            kube,
            f"/api/v1/namespaces/{ns}/endpoints",
            {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {"name": service.name, "namespace": ns, "labels": labels},
                "subsets": [
                    {
                        "addresses": [{"ip": service.ip, "targetRef": target}],
                        "ports": [{"name": "http", "port": service.port, "protocol": "TCP"}],
                    }
                ],
            },
        )
        _apply(
            kube,
            f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{service.name}-1",
                    "namespace": ns,
                    "labels": {"kubernetes.io/service-name": service.name},
                },
                "addressType": "IPv4",
                "endpoints": [
                    {"addresses": [service.ip], "conditions": {"ready": True}, "targetRef": target}
                ],
                "ports": [{"name": "http", "port": service.port, "protocol": "TCP"}],
            },
        )


def _apply(kube: KubeApi, collection: str, body: dict[str, Any], *, replace: bool = True) -> None:
    """Create `body`, or replace the existing object (a Pod's spec cannot change: kept)."""
    try:
        kube.create(collection, body)
    except KubeConflict:
        if not replace:
            return
        path = f"{collection}/{body['metadata']['name']}"
        current = kube.get(path)
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        kube.replace(path, body)


def expected_dependencies(cluster_domain: str = "cluster.local") -> dict[str, set[str]]:
    """Per caller, the FQDNs the demo traffic must teach."""
    return {
        caller: {f"{t}.{NAMESPACE}.svc.{cluster_domain}" for t in targets}
        for caller, targets in CALLS.items()
        if targets
    }
