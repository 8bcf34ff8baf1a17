"""lazyload itself in the real-Istio rig (`lazyload_testing.mesh`): nats-server and the four
services as local processes (`lazyload_cli.stack.Stack`) against the rig's API server, and the
global-sidecar as the chart runs it: a pod of its own (a network namespace on the rig's bridge,
Pod `mesh-operator/global-sidecar`, `sidecar.istio.io/inject: "false"`, so no istio-proxy) whose
Envoy takes its config from global-pilot.

- Everything the pods must reach listens on the rig's gateway address (`10.244.<n>.1`): NATS,
  the services' admin ports, global-pilot's xDS and accesslog-ingest's gRPC ALS.
- global-pilot's mesh-side apply is on (the default): it creates the global-sidecar Service
  (port `http-80`, Slime's wormhole port) in `mesh-operator` and the catch-all `to-global-sidecar`
  EnvoyFilter in `istio-system`. No endpoint controller runs in the rig, so `start_global_sidecar`
  writes the Service's EndpointSlice (the global-sidecar pod's address), as the EndpointSlice
  controller would.
- The global-sidecar Envoy (`--concurrency 1`) listens on `0.0.0.0:80` of its pod; its admin API
  is on `<pod ip>:15000`, reachable from the test process through the bridge.

`lazyload_in_mesh` (module scope) gives a test module such a stack in the session's mesh; at its
end the stack stops and what it wrote to the mesh goes (`lazyload-global-pilot uninstall`, the
ServiceFences and the Sidecars lazyload wrote), so later modules see the plain rig again.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from lazyload_cli.stack import Stack, StackConfig, bin_path, envoy_path
from lazyload_common.kube import KubeConflict, KubeNotFound

from lazyload_testing import mesh
from lazyload_testing.mesh import DOMAIN, IstioMesh, MeshWorkload, PodApp, endpoint_slice

__all__ = [
    "GLOBAL_SIDECAR_PORT",
    "WORMHOLE_PORTS",
    "GlobalSidecar",
    "LazyloadInMesh",
    "lazyload_in_mesh",
]

GLOBAL_SIDECAR_NAMESPACE = "mesh-operator"
GLOBAL_SIDECAR_NAME = "global-sidecar"
GLOBAL_SIDECAR_PORT = 80  # Slime's wormhole port: the route configuration "80" gets the catch-all
# More HTTP wormhole ports, as a user lists them (chart: globalSidecar.listenerPorts): gRPC's
WORMHOLE_PORTS = (GLOBAL_SIDECAR_PORT, 9090)
GLOBAL_SIDECAR_ADMIN_PORT = 15100  # its istio-proxy has 15000 (on 127.0.0.1)
SERVICEFENCES = "/apis/microservice.slime.io/v1alpha1"
SIDECARS = "/apis/networking.istio.io/v1"


class GlobalSidecar:
    """The global-sidecar pod: its address, and its Envoy's admin API."""

    def __init__(
        self,
        ip: str,
        netns: str,
        proxy: MeshWorkload | None = None,
        namespace: str = GLOBAL_SIDECAR_NAMESPACE,
    ) -> None:
        self.ip = ip
        self.namespace = namespace
        self.netns = netns
        self.proxy = proxy
        """The pod's istio-proxy when the global-sidecar is in the mesh (its calls go out
        through it: `proxy.host_counters(cluster)`)."""
        self.host = f"{GLOBAL_SIDECAR_NAME}.{namespace}.svc.{DOMAIN}"
        self.cluster = f"outbound|{GLOBAL_SIDECAR_PORT}||{self.host}"
        """The cluster a fenced sidecar sends unknown hosts to."""

    def admin(self, path: str) -> str:
        url = f"http://{self.ip}:{GLOBAL_SIDECAR_ADMIN_PORT}{path}"
        with urllib.request.urlopen(url, timeout=10) as response:
            return str(response.read().decode())

    def host_counters(self, cluster: str) -> dict[str, dict[str, int]]:
        """Per endpoint of `cluster` of the global-sidecar's Envoy, its `/clusters` counters."""
        return mesh.host_counters(self.admin("/clusters?format=json"), cluster)


class LazyloadInMesh(Stack):
    """`Stack` with the rig's API server instead of its own, every listener on the rig's
    gateway address, and the global-sidecar as a pod of the rig."""

    def __init__(
        self,
        mesh: IstioMesh,
        state_dir: Path,
        *,
        extra_env: Mapping[str, str] | None = None,
        in_mesh: bool = True,
        namespace_mode: tuple[str, ...] = (),
        service_env: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        """`namespace_mode`: the chart's `globalSidecar.mode=namespace` with those namespaces (a
        global-sidecar in each), else one global-sidecar in mesh-operator (cluster mode);
        `service_env`: settings of one service (name -> variables), as `<service>.config` of the
        chart sets them (each service refuses variables it does not know)."""
        self.mesh = mesh
        self.service_env = {name: dict(env) for name, env in (service_env or {}).items()}
        self.in_mesh = in_mesh
        self.namespace_mode = namespace_mode
        self.global_sidecar: GlobalSidecar | None = None
        self.global_sidecars: dict[str, GlobalSidecar] = {}
        extra_env = dict(extra_env or {})
        if namespace_mode:  # as the chart sets it for every service
            extra_env["LAZYLOAD_MESH__GLOBAL_SIDECAR_SERVICE"] = GLOBAL_SIDECAR_NAME
        config = StackConfig(
            state_dir=state_dir,
            host=mesh.network.gateway,  # reachable from the host and from every pod
            kube="real",
            with_envoy=False,  # the global-sidecar runs in its own pod: start_global_sidecar
            extra_env=dict(extra_env or {}),
        )
        super().__init__(config)

    def _start_real_kube(self) -> None:
        """The rig's API server (istiod's), not a control plane of the stack's own."""
        shutil.copyfile(self.mesh.kube.kubeconfig, self.kubeconfig)
        self.kubeconfig.chmod(0o600)
        self.pod_ips = {}

    def _service_env(self, name: str) -> dict[str, str]:
        env = {**super()._service_env(name), **self.service_env.get(name, {})}
        if name == "global-pilot":
            # the listeners are those of the global-sidecar pod, on Slime's wormhole port
            env["LAZYLOAD_LISTENER__ADDRESS"] = "0.0.0.0"
            env["LAZYLOAD_LISTENER__PORTS"] = json.dumps(list(WORMHOLE_PORTS))
            # as the chart sets it (globalSidecar.inMesh)
            env["LAZYLOAD_ROUTING__UPSTREAM"] = (
                "original_destination" if self.in_mesh else "endpoints"
            )
            if self.namespace_mode:
                env["LAZYLOAD_GLOBAL_SIDECAR__MODE"] = "namespace"
                env["LAZYLOAD_GLOBAL_SIDECAR__NAMESPACES"] = ",".join(self.namespace_mode)
        return env

    def start(self) -> dict[str, Any]:
        for namespace in self.namespace_mode:  # the user's namespaces exist before lazyload
            self.mesh._ensure_namespace(namespace, remember=False)
        endpoints = super().start()
        for namespace in self.namespace_mode or (GLOBAL_SIDECAR_NAMESPACE,):
            self.global_sidecars[namespace] = self.start_global_sidecar(namespace=namespace)
        self.global_sidecar = next(iter(self.global_sidecars.values()))
        return endpoints

    # -- the global-sidecar pod ----------------------------------------------------------------

    def start_global_sidecar(
        self, timeout: float = 60.0, *, namespace: str = GLOBAL_SIDECAR_NAMESPACE
    ) -> GlobalSidecar:
        """The global-sidecar pod as the chart runs it: with `in_mesh` (the chart's default) an
        istio-proxy beside its Envoy (proxy metadata `SLIME_APP`, xDS and ALS ports excluded
        from capture, ServiceAccount `global-sidecar`) and STRICT mTLS on its port; else a bare
        pod."""
        from lazyload_global_pilot import bootstrap

        mesh, c, ns = self.mesh, self.config, namespace
        # global-pilot's mesh-side apply makes the Service; the rig writes its EndpointSlice
        service = _wait_for(
            lambda: _get_or_none(mesh, f"/api/v1/namespaces/{ns}/services/{GLOBAL_SIDECAR_NAME}"),
            timeout,
            "global-pilot applied no global-sidecar Service",
            self,
        )
        slice_ports = [
            {"name": p["name"], "port": p["targetPort"], "protocol": "TCP"}
            for p in service["spec"]["ports"]
        ]
        path = c.state_dir / "global-sidecar.json"

        def envoy(netns: str, ip: str) -> list[str]:
            config = bootstrap.render_bootstrap(
                node_id=f"{GLOBAL_SIDECAR_NAME}~{ip}~{GLOBAL_SIDECAR_NAME}.{ns}~{ns}.svc.{DOMAIN}",
                cluster=GLOBAL_SIDECAR_NAME,
                xds_host=c.host,
                xds_port=int(c.xds_port or 0),
                admin_host=ip,
                admin_port=GLOBAL_SIDECAR_ADMIN_PORT,
            )
            path.write_text(json.dumps(config, indent=2))
            return [
                "ip", "netns", "exec", netns, envoy_path(), "-c", str(path),
                "--disable-hot-restart", "--concurrency", "1", "-l", "warning",
            ]  # fmt: skip

        proxy: MeshWorkload | None = None
        if self.in_mesh:
            mesh.api.create(
                f"/apis/security.istio.io/v1/namespaces/{ns}/peerauthentications",
                {
                    "apiVersion": "security.istio.io/v1",
                    "kind": "PeerAuthentication",
                    "metadata": {"name": GLOBAL_SIDECAR_NAME},
                    "spec": {
                        "selector": {"matchLabels": {"app": GLOBAL_SIDECAR_NAME}},
                        "mtls": {"mode": "STRICT"},
                    },
                },
            )
            proxy = mesh.add_workload(
                ns,
                GLOBAL_SIDECAR_NAME,
                {p["name"]: p["port"] for p in slice_ports},  # the Service's names and ports
                service="existing",  # the rig writes its EndpointSlice before the proxy starts
                test_state=False,  # the module's stack owns it (remove_from_mesh)
                app=PodApp(
                    command=lambda w: envoy(w.netns, w.ip),
                    proxy_metadata={"ISTIO_META_SLIME_APP": "LAZYLOAD_GLOBAL_SIDECAR"},
                    exclude_outbound_ports=(int(c.xds_port or 0), int(c.als_port or 0)),
                    exclude_inbound_ports=(GLOBAL_SIDECAR_ADMIN_PORT,),
                    service_account=GLOBAL_SIDECAR_NAME,
                ),
                timeout=timeout,
            )
            ip, netns = proxy.ip, proxy.netns
            processes = proxy.processes
            # istiod knows the pod behind the Service: its inbound port is HTTP (which sets
            # x-forwarded-client-cert), not the TCP passthrough of a port no Service names
            proxy.wait_for_clusters(
                *(f"inbound|{p['port']}||" for p in slice_ports), timeout=timeout
            )
        else:
            ip = mesh.network.allocate()
            netns = mesh.network.add_pod(ip)
            pod = _create_running_pod(mesh, ns, GLOBAL_SIDECAR_NAME, ip)
            with contextlib.suppress(KubeConflict):
                mesh.api.create(
                    f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
                    endpoint_slice(
                        ns, GLOBAL_SIDECAR_NAME, ip, slice_ports, pod["metadata"]["uid"]
                    ),
                )
            self.processes.spawn("global-sidecar-envoy", envoy(netns, ip))
            processes = self.processes
        name = "app" if proxy else "global-sidecar-envoy"
        processes.wait_http(name, f"http://{ip}:{GLOBAL_SIDECAR_ADMIN_PORT}/ready", timeout=timeout)
        processes.wait_tcp(name, ip, GLOBAL_SIDECAR_PORT, timeout=timeout)
        return GlobalSidecar(ip, netns, proxy, ns)

    # -- what lazyload wrote -------------------------------------------------------------------

    def fence(self, namespace: str, name: str) -> dict[str, Any] | None:
        return _get_or_none(
            self.mesh, f"{SERVICEFENCES}/namespaces/{namespace}/servicefences/{name}"
        )

    def sidecar(self, namespace: str, name: str) -> dict[str, Any] | None:
        return _get_or_none(self.mesh, f"{SIDECARS}/namespaces/{namespace}/sidecars/{name}")

    def wait_for(self, probe: Any, what: str, timeout: float = 30.0) -> Any:
        """Poll `probe()` until it returns something truthy (a stack process that died fails)."""
        return _wait_for(probe, timeout, what, self)

    def logs(self, lines: int = 30) -> str:
        return "\n\n".join(f"== {p.name}\n{p.log_tail(lines)}" for p in self.processes.processes)

    # -- teardown ------------------------------------------------------------------------------

    def remove_from_mesh(self) -> None:
        """What lazyload wrote into the mesh goes: the mesh-side objects (global-pilot's own
        uninstall), every ServiceFence and the Sidecars they own, the global-sidecar pod."""
        env = {"LAZYLOAD_KUBE__KUBECONFIG": str(self.kubeconfig), "PATH": "/usr/bin:/bin"}
        subprocess.run(
            [bin_path("lazyload-global-pilot"), "uninstall"],
            env=env,
            capture_output=True,
            check=False,
            timeout=60,
        )
        api = self.mesh.api
        for fence in api.list(f"{SERVICEFENCES}/servicefences").get("items", []):
            meta = fence["metadata"]
            ns, name = meta["namespace"], meta["name"]
            with contextlib.suppress(KubeNotFound):
                api.delete(f"{SIDECARS}/namespaces/{ns}/sidecars/{name}")
            with contextlib.suppress(KubeNotFound):
                api.delete(f"{SERVICEFENCES}/namespaces/{ns}/servicefences/{name}")
        for ns, gs in self.global_sidecars.items():
            if gs.proxy is not None:
                self.mesh.remove_workload(gs.proxy)
            else:
                self.mesh.network.remove_pod(gs.netns)
            for path in (
                f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices/{GLOBAL_SIDECAR_NAME}-rig",
                f"/api/v1/namespaces/{ns}/pods/{GLOBAL_SIDECAR_NAME}",
                f"/apis/security.istio.io/v1/namespaces/{ns}/peerauthentications/{GLOBAL_SIDECAR_NAME}",
            ):
                with contextlib.suppress(KubeNotFound):
                    api.delete(path)
        self.global_sidecars.clear()

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            self.remove_from_mesh()


def _get_or_none(mesh: IstioMesh, path: str) -> dict[str, Any] | None:
    try:
        return dict(mesh.api.get(path))
    except KubeNotFound:
        return None


def _wait_for(probe: Any, timeout: float, what: str, stack: Stack) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        stack.check_alive()
        if time.monotonic() > deadline:
            logs = stack.logs() if isinstance(stack, LazyloadInMesh) else ""
            raise TimeoutError(f"{what} within {timeout}s\n{logs}")
        time.sleep(0.2)


def _create_running_pod(mesh: IstioMesh, namespace: str, name: str, ip: str) -> dict[str, Any]:
    """A Pod without a sidecar (the chart's global-sidecar: `sidecar.istio.io/inject: "false"`),
    Running and Ready at `ip`, as a kubelet would report it."""
    api, ns_path = mesh.api, f"/api/v1/namespaces/{namespace}"
    mesh._ensure_namespace(namespace, remember=False)  # waits if a test before removed it
    api.create(
        f"{ns_path}/pods",
        {
            "metadata": {
                "name": name,
                "labels": {"app": name},
                "annotations": {"sidecar.istio.io/inject": "false"},
            },
            "spec": {
                "automountServiceAccountToken": False,
                "containers": [
                    {
                        "name": "envoy",
                        "image": "lazyload/global-sidecar",
                        "ports": [{"containerPort": GLOBAL_SIDECAR_PORT, "protocol": "TCP"}],
                    }
                ],
            },
        },
    )
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return dict(
        api.merge_patch(
            f"{ns_path}/pods/{name}/status",
            {
                "status": {
                    "phase": "Running",
                    "podIP": ip,
                    "podIPs": [{"ip": ip}],
                    "hostIP": mesh.network.gateway,
                    "startTime": now,
                    "conditions": [
                        {"type": t, "status": "True", "lastTransitionTime": now}
                        for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
                    ],
                }
            },
        )
    )


@pytest.fixture(scope="module")
def lazyload_in_mesh(istio_mesh_server: IstioMesh) -> Iterator[LazyloadInMesh]:
    """lazyload with default settings in the session's mesh, for one test module."""
    state_dir = istio_mesh_server.directory / "lazyload"
    if state_dir.exists():
        shutil.rmtree(state_dir)
    stack = LazyloadInMesh(istio_mesh_server, state_dir)
    with stack:
        yield stack
