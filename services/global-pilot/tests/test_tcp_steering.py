"""TCP steering (issue 15): which Service addresses are steered (`tunnels.of`), the filter chains
the `to-global-sidecar` EnvoyFilter adds for them (Istio's schema accepts them), and a real Envoy
fed by global-pilot terminating a caller's HTTP POST tunnel: the bytes reach the Service in both
upstream modes, the access log names the Service while the connection is still open, and an
address that is not a steered Service is refused (no open relay). The whole path through real
sidecars is tests/mesh (scenario 5)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from lazyload_global_pilot import meshside, rendering, tunnels
from lazyload_global_pilot.mesh import EndpointGroup, EndpointPort, MeshState, Service, ServicePort
from lazyload_global_pilot.ports import PortSet

GS = "outbound|80||global-sidecar.mesh-operator.svc.cluster.local"


def _service(name: str, ip: str | None, *ports: tuple[str, int], ns: str = "shop") -> Service:
    return Service(
        namespace=ns,
        name=name,
        cluster_ip=ip,
        ports=tuple(ServicePort(name=n, port=p) for n, p in ports),
    )


MESH = MeshState.of(
    [
        _service("db", "10.96.0.20", ("tcp-sql", 5432), ("http-admin", 8080)),
        _service("cache", "10.96.0.21", ("redis", 6379)),
        _service("replica", "10.96.0.22", ("tcp", 5432)),
        _service("headless", "None", ("tcp", 5432)),
        _service("web", "10.96.0.23", ("http", 80), ("grpc", 9090)),
        _service("global-sidecar", "10.96.0.2", ("tcp-3306", 3306), ns="mesh-operator"),
    ]
)
OWN = [("mesh-operator", "global-sidecar")]


def test_tcp_ports_of_services_with_a_cluster_ip_are_steered():
    steered = tunnels.of(MESH, OWN)
    assert [(t.port, t.addresses) for t in steered.targets] == [
        (5432, ("10.96.0.20", "10.96.0.22")),
        (6379, ("10.96.0.21",)),
    ]
    # HTTP and gRPC ports have routes of their own; headless Services have no address to dial;
    # the global-sidecar's own Services are never steered (no loop)
    assert tunnels.of(MeshState(), OWN) == tunnels.TcpTunnels()


def _chains(envoy_filter: dict, *, own: bool) -> list[dict]:
    return [
        p
        for p in envoy_filter["spec"]["configPatches"]
        if p["applyTo"] == "FILTER_CHAIN" and ("proxy" in p["match"]) == own
    ]


def test_the_envoy_filter_tunnels_steered_addresses_to_the_global_sidecar():
    objects = meshside.render(
        PortSet(http=(80, 9080)), meshside.MeshSideOptions(), tunnels.of(MESH, OWN)
    )
    envoy_filter = next(o for o in objects if o["kind"] == "EnvoyFilter")
    callers = _chains(envoy_filter, own=False)
    assert [p["patch"]["value"]["name"] for p in callers] == [
        "lazyload-tcp-5432",
        "lazyload-tcp-6379",
    ]
    first = callers[0]
    assert first["match"] == {
        "context": "SIDECAR_OUTBOUND",
        "listener": {"name": "virtualOutbound"},
    }
    assert first["patch"]["operation"] == "ADD"
    chain = first["patch"]["value"]
    assert chain["filter_chain_match"] == {
        "destination_port": 5432,
        "prefix_ranges": [
            {"address_prefix": "10.96.0.20", "prefix_len": 32},
            {"address_prefix": "10.96.0.22", "prefix_len": 32},
        ],
    }
    proxy = chain["filters"][0]["typed_config"]
    assert proxy["cluster"] == GS  # the first HTTP wormhole port, over the mesh's mTLS
    tunnel = proxy["tunneling_config"]
    assert tunnel["hostname"] == "%DOWNSTREAM_LOCAL_ADDRESS%" and tunnel["use_post"] is True
    assert {h["header"]["key"]: h["header"]["value"] for h in tunnel["headers_to_add"]} == {
        "Slime-Orig-Dest": "%DOWNSTREAM_LOCAL_ADDRESS%",
        "Slime-Source-Ns": "%ENVIRONMENT(POD_NAMESPACE)%",
        "Lazyload-Source-Ip": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
    }
    # the global-sidecar's own proxy passes such connections through (more specific chains)
    own = _chains(envoy_filter, own=True)
    assert [
        (
            p["patch"]["value"]["filter_chain_match"]["transport_protocol"],
            p["patch"]["value"]["filters"][0]["typed_config"]["cluster"],
        )
        for p in own
    ] == [("raw_buffer", "PassthroughCluster"), ("tls", "PassthroughCluster")] * 2
    assert all(p["match"]["proxy"] == {"metadata": meshside.SLIME_APP} for p in own)
    meshside.validate(envoy_filter)


def test_no_tcp_steering_without_tunnels_or_with_passthrough_by_default():
    steered = tunnels.of(MESH, OWN)
    plain = meshside.render(PortSet(http=(80,)), meshside.MeshSideOptions())
    passthrough = meshside.render(
        PortSet(http=(80,)), meshside.MeshSideOptions(passthrough_by_default=True), steered
    )
    tcp_only = meshside.render(PortSet(tcp=(3306,)), meshside.MeshSideOptions(), steered)
    for objects in (plain, passthrough, tcp_only):
        for envoy_filter in (o for o in objects if o["kind"] == "EnvoyFilter"):
            assert not _chains(envoy_filter, own=False) and not _chains(envoy_filter, own=True)


# --- a real Envoy terminating the tunnel --------------------------------------------------------


@contextlib.asynccontextmanager
async def _echo_server(host: str) -> AsyncIterator[int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, host, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def _tunnel(port: int, authority: str, payload: bytes) -> tuple[bytes, asyncio.StreamWriter]:
    """Open an HTTP/1.1 POST tunnel as a caller's sidecar does; send `payload` as one chunk.
    Returns the response head plus what came back until `payload` did (or the connection closed),
    and the still open connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST / HTTP/1.1\r\nHost: {authority}\r\nTransfer-Encoding: chunked\r\n"
        f"Slime-Orig-Dest: {authority}\r\n\r\n".encode()
        + f"{len(payload):x}\r\n".encode()
        + payload
        + b"\r\n"
    )
    await writer.drain()
    received = b""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5):
            while payload not in received and not received.startswith(b"HTTP/1.1 4"):
                chunk = await reader.read(65536)
                if not chunk:
                    break
                received += chunk
    return received, writer


@pytest.mark.parametrize("upstream", ["endpoints", "original_destination"])
async def test_the_global_sidecar_terminates_a_tunnel_to_a_steered_service(
    sidecar, pod_address, upstream
):
    async with _echo_server(pod_address) as echo_port:
        # the Service's ClusterIP is the pod's address here (no kube-proxy in a unit test): the
        # original_destination upstream dials the ClusterIP, the endpoints one the endpoint
        store = Service(
            namespace="shop",
            name="store",
            cluster_ip=pod_address,
            ports=(ServicePort(name="tcp-store", port=echo_port),),
            endpoints=(
                EndpointGroup(
                    addresses=(pod_address,),
                    ports=(EndpointPort(name="tcp-store", port=echo_port),),
                ),
            ),
        )
        sidecar.reconfigure(upstream=upstream, tcp_steering=True)
        sidecar.set_mesh(store)
        port = sidecar.options.listener_ports[0]
        authority = f"{pod_address}:{echo_port}"
        received = b""
        for _ in range(50):  # Envoy applies the pushed routes asynchronously
            received, writer = await _tunnel(port, authority, b"hello over tcp")
            if b"hello over tcp" in received:
                break
            writer.close()
            await asyncio.sleep(0.1)
        assert received.startswith(b"HTTP/1.1 200"), received
        assert b"hello over tcp" in received
        # logged (and so learned) while the connection is still open, named as the Service
        entry = await sidecar.logged(
            lambda e: e.request.authority == f"store.shop.svc.cluster.local:{echo_port}",
            within=rendering.ACCESS_LOG_FLUSH_SECONDS + 3,
        )
        assert entry.request.request_headers["slime-orig-dest"] == authority
        writer.close()

        # an address that is no steered Service: nothing is relayed
        refused, other = await _tunnel(port, f"{pod_address}:{echo_port + 1}", b"relay me")
        other.close()
        assert b"relay me" not in refused
        assert sidecar.xds.ads.stats.nacks == 0
