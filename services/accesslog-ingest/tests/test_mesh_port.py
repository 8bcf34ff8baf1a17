"""The mesh ALS port (`grpc.mesh_port`): ordinary sidecars stream through accesslog-ingest's own
istio-proxy, and a stream is believed only as far as its transport proves it.

- `identity.certified_peer`: the SPIFFE identity of the last `x-forwarded-client-cert` element
  (the one the inbound proxy appended, Istio's `APPEND_FORWARD`), quoted values, what is no
  Kubernetes SPIFFE ID, an oversized header;
- `identity.stream_peer`: only a loopback peer (the pod's proxy) and exactly one header count;
- `identity.claim_problem`: a node may claim only the certificate's namespace, and only the
  global-sidecar's service account may claim a global-sidecar's node;
- over a real gRPC server and client on loopback (the client plays the inbound proxy): a matching
  stream's edges arrive; a stream claiming another namespace, or the global-sidecar, is closed
  (PERMISSION_DENIED) before any of its entries count, and counted; a stream without the header is
  refused (UNAUTHENTICATED) and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc
import pytest
from envoy.service.accesslog.v3 import als_pb2
from lazyload_accesslog_ingest import identity, receiving
from lazyload_accesslog_ingest.ingesting import Ingestor, Sighting
from lazyload_accesslog_ingest.records import StreamIdentity
from lazyload_testing import ingest as t

BY = "By=spiffe://cluster.local/ns/mesh-operator/sa/lazyload-accesslog-ingest;Hash=ab12"


def xfcc(namespace: str, account: str = "web") -> str:
    return f'{BY};Subject="";URI=spiffe://cluster.local/ns/{namespace}/sa/{account};DNS=x'


def test_the_proxy_s_element_is_the_peer() -> None:
    assert identity.certified_peer(xfcc("default")) == identity.SpiffeId(
        "cluster.local", "default", "web"
    )
    # an element the client sent itself comes first and proves nothing
    assert identity.certified_peer(f"{xfcc('shop')},{xfcc('default')}") == identity.SpiffeId(
        "cluster.local", "default", "web"
    )
    quoted = 'By=x;URI="spiffe://td.example/ns/a-b/sa/svc-1";Subject="CN=x, O=y"'
    assert identity.certified_peer(quoted) == identity.SpiffeId("td.example", "a-b", "svc-1")
    assert str(identity.certified_peer(quoted)) == "spiffe://td.example/ns/a-b/sa/svc-1"


@pytest.mark.parametrize(
    "header",
    [
        "",
        "By=x;Hash=y",  # no URI: the client's connection had no certificate
        "By=x;URI=spiffe://cluster.local/ns/default",  # no service account
        "By=x;URI=spiffe://cluster.local/ns/Default/sa/web",  # no Kubernetes namespace
        "By=x;URI=https://cluster.local/ns/default/sa/web",
        "By=x;URI=spiffe:///ns/default/sa/web",  # no trust domain
        f"{xfcc('default')},By=x;Hash=y",  # the proxy's own element proves nothing
        xfcc("default") + ";DNS=" + "x" * identity.MAX_CLIENT_CERT,
    ],
)
def test_no_peer_is_proven(header: str) -> None:
    assert identity.certified_peer(header) is None


def test_only_the_local_proxy_is_believed() -> None:
    proven = identity.SpiffeId("cluster.local", "default", "web")
    header = [("x-forwarded-client-cert", xfcc("default"))]
    assert identity.stream_peer(header, "ipv4:127.0.0.6:43210") == proven
    assert identity.stream_peer(header, "ipv6:[::1]:43210") == proven
    assert identity.stream_peer(header, "ipv6:[::6]:43210") == proven
    for peer in ("ipv4:10.244.0.7:43210", "unix:/tmp/x", "ipv6:[fd00::1]:1"):
        assert isinstance(identity.stream_peer(header, peer), str), peer
    assert isinstance(identity.stream_peer(header * 2, "ipv4:127.0.0.6:1"), str)
    assert isinstance(identity.stream_peer([], "ipv4:127.0.0.6:1"), str)


def test_a_claim_must_match_the_certificate() -> None:
    proven = identity.SpiffeId("cluster.local", "default", "web")
    accounts = {"global-sidecar"}

    def problem(claimed: StreamIdentity | None, to: identity.SpiffeId = proven) -> str | None:
        return identity.claim_problem(to, claimed, global_sidecar_accounts=accounts)

    assert problem(StreamIdentity(node_id="n", namespace="default", workload="web")) is None
    assert "shop" in (problem(StreamIdentity(node_id="n", namespace="shop")) or "")
    assert problem(StreamIdentity(node_id="n")) is not None  # no namespace
    assert problem(None) is not None
    gs = StreamIdentity(node_id="gs", namespace="default", global_sidecar=True)
    assert "global-sidecar" in (problem(gs) or "")
    assert problem(gs, identity.SpiffeId("cluster.local", "default", "global-sidecar")) is None


# --- over real gRPC ------------------------------------------------------------------------------

WEB = {"NAMESPACE": "default", "WORKLOAD_NAME": "web"}


class _Sink:
    def __init__(self) -> None:
        self.edges: list[tuple[str, str, str]] = []

    def __call__(self, sightings: Mapping[str, Sighting], at: float) -> None:
        for proto, _ in sightings.values():
            self.edges.append((proto.source_namespace, proto.source_name, proto.destination_host))


@pytest.fixture
async def mesh_port() -> AsyncIterator[tuple[str, _Sink]]:
    sink = _Sink()
    receiver = receiving.AccessLogReceiver(
        Ingestor(t.sample_index()), sink, mesh=receiving.MeshPort()
    )
    server = receiving.AlsServer(receiver, host="127.0.0.1", port=0, max_message_bytes=1 << 20)
    port = await server.start()
    yield f"127.0.0.1:{port}", sink
    await server.stop(0.1)


async def _stream(target: str, metadata: list[tuple[str, str]], *messages: Any) -> grpc.StatusCode:
    async with grpc.aio.insecure_channel(target) as channel:
        method = channel.stream_unary(
            receiving.METHOD_PATH,
            request_serializer=None,
            response_deserializer=als_pb2.StreamAccessLogsResponse.FromString,
        )
        call = method(metadata=metadata)
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
            for message in messages:  # a write fails once the server ended the call
                await call.write(message.SerializeToString())
            await call.done_writing()
        try:
            await call
        except grpc.aio.AioRpcError as e:
            return e.code()
        return grpc.StatusCode.OK


def _claiming(metadata: Mapping[str, Any]) -> Any:
    ident = t.identifier("sidecar~web", log_name="sidecar-als", metadata=metadata)
    return t.message(t.http_entry("details:9080", caller="10.9.9.9"), ident=ident)


def _value(name: str, reason: str) -> float:
    return t.metric_value(name, {"reason": reason})


async def test_a_proven_stream_is_learned(mesh_port: tuple[str, _Sink]) -> None:
    target, sink = mesh_port
    code = await _stream(target, [("x-forwarded-client-cert", xfcc("default"))], _claiming(WEB))
    assert code == grpc.StatusCode.OK
    assert sink.edges and {e[0] for e in sink.edges} == {"default"}


@pytest.mark.parametrize(
    "claim",
    [
        {"NAMESPACE": "shop", "WORKLOAD_NAME": "web"},  # a pod of default speaking for shop
        {**WEB, "SLIME_APP": "LAZYLOAD_GLOBAL_SIDECAR"},  # callers by address: not its to name
        {"WORKLOAD_NAME": "web"},  # no namespace at all
    ],
)
async def test_a_claim_the_certificate_does_not_prove_closes_the_stream(
    mesh_port: tuple[str, _Sink], claim: dict[str, str]
) -> None:
    target, sink = mesh_port
    closed = _value("lazyload_ingest_streams_closed_total", "identity_mismatch")
    rejected = _value("lazyload_ingest_rejected_total", "identity_mismatch")
    code = await _stream(
        target,
        [("x-forwarded-client-cert", xfcc("default"))],
        _claiming(claim),
        _claiming(WEB),  # never read: the stream is closed at the first message
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert sink.edges == []
    assert _value("lazyload_ingest_streams_closed_total", "identity_mismatch") == closed + 1
    assert _value("lazyload_ingest_rejected_total", "identity_mismatch") == rejected + 1


@pytest.mark.parametrize(
    "metadata",
    [
        [],  # plaintext around the proxy, or a proxy that does not forward the certificate
        [("x-forwarded-client-cert", "By=x;Hash=y")],  # the proxy saw no client certificate
        [("x-forwarded-client-cert", xfcc("default")), ("x-forwarded-client-cert", xfcc("a"))],
    ],
)
async def test_a_stream_without_a_proven_peer_is_refused(
    mesh_port: tuple[str, _Sink], metadata: list[tuple[str, str]]
) -> None:
    target, sink = mesh_port
    refused = _value("lazyload_ingest_streams_closed_total", "unauthenticated")
    assert await _stream(target, metadata, _claiming(WEB)) == grpc.StatusCode.UNAUTHENTICATED
    assert sink.edges == []
    assert _value("lazyload_ingest_streams_closed_total", "unauthenticated") == refused + 1


async def test_the_service_serves_both_ports(start_ingest, observer) -> None:
    """`grpc.mesh_port` beside the ALS port: the mesh port checks its streams, the other does
    not (its transport is lazyload's own mutual TLS, where the chart turns it on)."""
    ingest = await start_ingest(grpc={"mesh_port": 0})
    assert ingest.ports.mesh_grpc and ingest.ports.mesh_grpc != ingest.ports.grpc
    mesh_target = f"127.0.0.1:{ingest.ports.mesh_grpc}"
    assert await _stream(mesh_target, [], _claiming(WEB)) == grpc.StatusCode.UNAUTHENTICATED
    header = [("x-forwarded-client-cert", xfcc("default"))]
    assert await _stream(mesh_target, header, _claiming(WEB)) == grpc.StatusCode.OK

    async def published() -> bool:
        return {e.event.source_namespace for e in await t.read_dependency_events(observer)} == {
            "default"
        }

    await t.eventually(published, what="the proven stream's edge")
    assert await _stream(ingest.target, [], _claiming(WEB)) == grpc.StatusCode.OK
