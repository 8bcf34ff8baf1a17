"""Fixtures of global-pilot's tests: meshes, an upstream HTTP server, an ADS client, a sidecar.

`sidecar` is the whole data path on loopback: global-pilot's ADS server and cache, a test ALS
server (HTTP and TCP entries), and a real Envoy started on global-pilot's bootstrap; its render
options can be changed (`reconfigure`). Everything binds random ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from lazyload_cli.podnet import PodNetwork
from lazyload_global_pilot import bootstrap, metrics, rendering, server
from lazyload_global_pilot.cache import SnapshotCache
from lazyload_global_pilot.mesh import EndpointGroup, EndpointPort, MeshState, Service, ServicePort
from lazyload_global_pilot.snapshots import Snapshot
from lazyload_testing.envoy import EnvoyProcess, EnvoyStarter


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def free_port() -> Any:
    """`free_port()`: a TCP port free on 127.0.0.1 right now (for Envoy's listeners)."""
    return _free_port


def _make_service(
    name: str,
    namespace: str = "default",
    *,
    port: int = 9080,
    port_name: str = "http",
    endpoints: tuple[tuple[str, int], ...] = (),
    cluster_ip: str | None = None,
) -> Service:
    """A one-port Service whose endpoints are (address, target port) pairs."""
    groups = tuple(
        EndpointGroup(addresses=(address,), ports=(EndpointPort(name=port_name, port=target),))
        for address, target in endpoints
    )
    return Service(
        namespace=namespace,
        name=name,
        ports=(ServicePort(name=port_name, port=port),),
        cluster_ip=cluster_ip,
        endpoints=groups,
    )


@pytest.fixture
def make_service() -> Any:
    """`make_service(name, namespace="default", *, port=9080, endpoints=((addr, port),))`."""
    return _make_service


# --- pod addresses -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pod_network() -> Iterator[PodNetwork]:
    """Addresses of 10.244.0.0/16 held by `lo` for this run (needs root), gone at its end."""
    with PodNetwork() as network:
        yield network


@pytest.fixture
def pod_address(pod_network: PodNetwork) -> str:
    """An address an upstream can listen on and Endpoints can list (the API server refuses
    loopback endpoints, the real one and the emulator alike)."""
    return pod_network.allocate()[0]


# --- a tiny upstream ---------------------------------------------------------------------------


class _Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        assert isinstance(self.server, _EchoServer)
        body = f"{self.server.name} {self.headers.get('Host')}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


class _EchoServer(http.server.ThreadingHTTPServer):
    """Answers `<name> <Host>` (`_Echo`)."""

    daemon_threads = True

    def __init__(self, address: str, name: str) -> None:
        super().__init__((address, 0), _Echo)
        self.name = name


@dataclass
class Upstream:
    port: int
    name: str
    address: str = "127.0.0.1"


@pytest.fixture
def upstream_factory() -> Iterator[Any]:
    """`upstream_factory(name, address="127.0.0.1")`: an HTTP server that answers
    `<name> <Host>` (on a `pod_address` where a real API server must list it)."""
    servers: list[_EchoServer] = []

    def start(name: str, address: str = "127.0.0.1") -> Upstream:
        httpd = _EchoServer(address, name)
        threading.Thread(
            target=httpd.serve_forever, args=(0.05,), name=f"upstream-{name}", daemon=True
        ).start()
        servers.append(httpd)
        return Upstream(port=httpd.server_address[1], name=name, address=address)

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


# --- ADS: the server and a protocol-level client -----------------------------------------------


@dataclass
class Xds:
    cache: SnapshotCache
    ads: server.AdsServer
    port: int


@pytest.fixture
async def xds() -> AsyncIterator[Xds]:
    """global-pilot's ADS server on a random port over an empty cache, with the metrics hooks."""
    cache = SnapshotCache()
    ads = server.AdsServer(cache, hooks=metrics.hooks())
    grpc_server, port = await server.start(ads, "127.0.0.1", 0)
    yield Xds(cache, ads, port)
    await grpc_server.stop(0)


class AdsClient:
    """Speaks ADS like Envoy, one request at a time; responses are queued as they arrive."""

    def __init__(self, channel: grpc.aio.Channel, node_id: str) -> None:
        self.node = base_pb2.Node(id=node_id, cluster="test")
        self.call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
        self.responses: asyncio.Queue[discovery_pb2.DiscoveryResponse] = asyncio.Queue()
        self._first = True
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            async for response in self.call:
                await self.responses.put(response)

    async def send(
        self,
        type_url: str,
        *,
        names: tuple[str, ...] = (),
        version: str = "",
        nonce: str = "",
        error: str | None = None,
    ) -> None:
        request = discovery_pb2.DiscoveryRequest(
            type_url=type_url, resource_names=names, version_info=version, response_nonce=nonce
        )
        if self._first:
            request.node.CopyFrom(self.node)
            self._first = False
        if error is not None:
            request.error_detail.code = 3
            request.error_detail.message = error
        await self.call.write(request)

    async def ack(
        self, response: discovery_pb2.DiscoveryResponse, names: tuple[str, ...] = ()
    ) -> None:
        await self.send(
            response.type_url, names=names, version=response.version_info, nonce=response.nonce
        )

    async def recv(self, timeout: float = 2.0) -> discovery_pb2.DiscoveryResponse:
        return await asyncio.wait_for(self.responses.get(), timeout)

    async def silent(self, wait: float = 0.2) -> bool:
        """True when nothing arrives within `wait` seconds."""
        await asyncio.sleep(wait)
        return self.responses.empty()

    async def close(self) -> None:
        await self.call.done_writing()
        self.call.cancel()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@pytest.fixture
async def ads_client(xds: Xds) -> AsyncIterator[Any]:
    """Factory of `AdsClient`s connected to the `xds` server."""
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{xds.port}")
    clients: list[AdsClient] = []

    def connect(node_id: str = "node-1") -> AdsClient:
        client = AdsClient(channel, node_id)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        await client.close()
    await channel.close()


# --- ALS receiver ------------------------------------------------------------------------------


@dataclass
class AlsReceiver(als_pb2_grpc.AccessLogServiceServicer):
    """Keeps every HTTP access log entry Envoy streams, and each stream's log name."""

    entries: list[Any] = field(default_factory=list)
    tcp_entries: list[Any] = field(default_factory=list)
    log_names: list[str] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def StreamAccessLogs(
        self, request_iterator: AsyncIterator[als_pb2.StreamAccessLogsMessage], context: Any
    ) -> als_pb2.StreamAccessLogsResponse:
        async for message in request_iterator:
            if message.HasField("identifier"):
                self.log_names.append(message.identifier.log_name)
            self.entries.extend(message.http_logs.log_entry)
            self.tcp_entries.extend(message.tcp_logs.log_entry)
            self.arrived.set()
        return als_pb2.StreamAccessLogsResponse()


# --- the whole sidecar -------------------------------------------------------------------------


@dataclass
class Sidecar:
    """A real Envoy fed by global-pilot, with helpers to change the mesh and send traffic."""

    xds: Xds
    envoy: EnvoyProcess
    options: rendering.RenderOptions
    als: AlsReceiver
    http: httpx.AsyncClient

    def reconfigure(self, **updates: Any) -> None:
        """Change the render options (ports, dispatches, passthrough) for the next `set_mesh`."""
        self.options = self.options.model_copy(update=updates)

    def set_mesh(self, *services: Service) -> Snapshot:
        snapshot = Snapshot.of(rendering.render(MeshState.of(list(services)), self.options))
        self.xds.cache.set(snapshot)
        return snapshot

    async def get(self, host: str, **headers: str) -> httpx.Response:
        port = self.options.listener_ports[0]
        return await self.http.get(
            f"http://127.0.0.1:{port}/path", headers={"Host": host, **headers}
        )

    async def eventually(
        self, host: str, status: int = 200, *, within: float = 5.0, **headers: str
    ) -> httpx.Response:
        """Envoy applies pushed config asynchronously: retry until `status` or `within` seconds."""
        deadline = time.monotonic() + within
        while True:
            response = await self.get(host, **headers)
            if response.status_code == status or time.monotonic() > deadline:
                assert response.status_code == status, (host, response.status_code, response.text)
                return response
            await asyncio.sleep(0.02)

    async def logged(self, predicate: Any, *, tcp: bool = False, within: float = 5.0) -> Any:
        """The first ALS entry matching `predicate`, waiting up to `within` seconds."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for entry in self.als.tcp_entries if tcp else self.als.entries:
                if predicate(entry):
                    return entry
            await asyncio.sleep(0.05)
        raise AssertionError(
            f"no such ALS entry in {len(self.als.entries)} entries: "
            f"{[(e.request.authority, e.response.response_code.value) for e in self.als.entries]}"
        )


@pytest.fixture
async def sidecar(xds: Xds, envoy_runner: EnvoyStarter) -> AsyncIterator[Sidecar]:
    """An empty mesh served to a LIVE Envoy whose access logs go to a test ALS server."""
    als = AlsReceiver()
    als_server = grpc.aio.server()
    als_pb2_grpc.add_AccessLogServiceServicer_to_server(als, als_server)
    als_port = als_server.add_insecure_port("127.0.0.1:0")
    await als_server.start()
    options = rendering.RenderOptions(
        listener_address="127.0.0.1",
        listener_ports=(_free_port(),),
        als=rendering.AlsTarget(host="127.0.0.1", port=als_port),
    )
    xds.cache.set(Snapshot.of(rendering.render(MeshState(), options)))
    envoy = await envoy_runner(
        bootstrap.render_bootstrap(xds_host="127.0.0.1", xds_port=xds.port, node_id="test-sidecar")
    )
    async with httpx.AsyncClient(timeout=5, trust_env=False) as client:
        yield Sidecar(xds, envoy, options, als, client)
    await envoy.stop()
    await als_server.stop(0)
