"""HTTP/2, gRPC and TCP through the global-sidecar: a real Envoy, a real grpc.aio upstream.

Covers: gRPC (h2c) reaches a Service by `:authority` through the same listener as HTTP/1.1, on a
`grpc` port (HTTP/2 upstream) and on an unnamed port (upstream protocol follows the caller's),
unary and server-streaming; gRPC to an unknown host goes to `Slime-Orig-Dest` as HTTP/2; a TCP
wormhole port forwards a connection to its original destination (given here by a PROXY protocol
header, as SO_ORIGINAL_DST needs an iptables redirect) and the TCP access log reaches the ALS
server; no NACK.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

pytestmark = pytest.mark.envoy

SAY = "/lazyload.test.Echo/Say"
COUNT = "/lazyload.test.Echo/Count"


async def _count(request: bytes, context: grpc.aio.ServicerContext):
    for i in range(int(request)):
        yield str(i).encode()


@pytest.fixture
async def grpc_upstream():
    """`await grpc_upstream(name)`: a grpc.aio server whose `Say` answers `<name> <request>`."""
    servers: list[grpc.aio.Server] = []

    async def start(name: str) -> int:
        async def say(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return name.encode() + b" " + request

        server = grpc.aio.server()
        handler = grpc.method_handlers_generic_handler(
            "lazyload.test.Echo",
            {
                "Say": grpc.unary_unary_rpc_method_handler(say),
                "Count": grpc.unary_stream_rpc_method_handler(_count),
            },
        )
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        return port

    yield start
    for server in servers:
        await server.stop(0)


async def _call(sidecar, authority: str, metadata=(), within: float = 5.0) -> bytes:
    target = f"127.0.0.1:{sidecar.options.listener_ports[0]}"
    deadline = time.monotonic() + within
    async with grpc.aio.insecure_channel(
        target, options=[("grpc.default_authority", authority)]
    ) as channel:
        say = channel.unary_unary(SAY)
        while True:
            try:
                return await say(b"hi", metadata=metadata, timeout=2)
            except grpc.aio.AioRpcError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)


async def test_grpc_reaches_services_and_the_passthrough(
    sidecar, grpc_upstream, upstream_factory, make_service
):
    web = upstream_factory("web")
    greeter, sniffed, outside = (
        await grpc_upstream("greeter"),
        await grpc_upstream("sniffed"),
        await grpc_upstream("outside"),
    )
    sidecar.reconfigure(passthrough_by_default=True)
    sidecar.set_mesh(
        make_service("greeter", port=50051, port_name="grpc", endpoints=(("127.0.0.1", greeter),)),
        make_service("sniffed", port=50052, port_name="", endpoints=(("127.0.0.1", sniffed),)),
        make_service("web", port=80, port_name="", endpoints=(("127.0.0.1", web.port),)),
    )
    fqdn = "greeter.default.svc.cluster.local:50051"
    assert await _call(sidecar, fqdn) == b"greeter hi"
    assert await _call(sidecar, "greeter:50051") == b"greeter hi"
    assert await _call(sidecar, "sniffed.default:50052") == b"sniffed hi"
    # HTTP/1.1 on the same listener, same unnamed-port upstream protocol rule
    assert (await sidecar.eventually("web.default")).text == "web web.default"
    orig = (("slime-orig-dest", f"127.0.0.1:{outside}"),)
    assert await _call(sidecar, "api.grpc.example", orig) == b"outside hi"
    target = f"127.0.0.1:{sidecar.options.listener_ports[0]}"
    async with grpc.aio.insecure_channel(
        target, options=[("grpc.default_authority", fqdn)]
    ) as channel:
        replies = [r async for r in channel.unary_stream(COUNT)(b"3", timeout=2)]
    assert replies == [b"0", b"1", b"2"]
    entry = await sidecar.logged(lambda e: e.request.authority == fqdn and e.request.path == SAY)
    assert entry.protocol_version == entry.HTTP2
    assert sidecar.xds.ads.stats.nacks == 0


async def test_tcp_port_forwards_to_the_original_destination_and_logs(sidecar, free_port):
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read(100)
        writer.write(b"echo " + data)
        await writer.drain()
        writer.close()

    upstream = await asyncio.start_server(echo, "127.0.0.1", 0)
    upstream_port = upstream.sockets[0].getsockname()[1]
    tcp_port = free_port()
    sidecar.reconfigure(tcp_ports=(tcp_port,))
    sidecar.set_mesh()
    try:
        reply = await _tcp_exchange(tcp_port, upstream_port, b"hello")
        assert reply == b"echo hello"
        entry = await sidecar.logged(
            lambda e: (
                e.common_properties.upstream_remote_address.socket_address.port_value
                == upstream_port
            ),
            tcp=True,
        )
        local = entry.common_properties.downstream_local_address.socket_address
        assert (local.address, local.port_value) == ("127.0.0.1", upstream_port)
        assert entry.common_properties.upstream_cluster == "lazyload-passthrough-tcp"
        assert sidecar.xds.ads.stats.nacks == 0
    finally:
        upstream.close()
        await upstream.wait_closed()


async def _tcp_exchange(port: int, destination: int, payload: bytes, within: float = 5.0) -> bytes:
    proxy = f"PROXY TCP4 10.1.2.3 127.0.0.1 40000 {destination}\r\n".encode()
    deadline = time.monotonic() + within
    while True:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(proxy + payload)
            await writer.drain()
            reply = await asyncio.wait_for(reader.read(100), 2)
            writer.close()
            if reply:
                return reply
        except (ConnectionError, OSError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError("the TCP listener never forwarded")
        await asyncio.sleep(0.05)
