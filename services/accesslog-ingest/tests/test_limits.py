"""Limits and TLS of the ALS port, against the real gRPC server of `app.run` and a real client.

- `grpc.max_streams`: a stream past the limit is refused (RESOURCE_EXHAUSTED) and counted, the
  open ones go on, and a slot freed is usable again;
- `grpc.stream_idle_timeout`: a silent stream is closed (DEADLINE_EXCEEDED) and counted;
- `grpc.max_malformed_per_stream`: a stream that keeps sending garbage is closed
  (INVALID_ARGUMENT) and counted, another stream goes on;
- `grpc.max_message_bytes`: a larger message ends its stream (RESOURCE_EXHAUSTED);
- TLS (`grpc.tls_cert_file`/`tls_key_file`): a TLS client that trusts the CA gets its edges
  published, a plaintext client cannot talk to the port;
- mutual TLS (`grpc.require_client_cert` + `tls_client_ca_file`): no client certificate, or one
  from another CA, cannot open a stream; the right one can.
Certificates are made in the test (`certificates.issue_certificates`).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import grpc
import pytest
from lazyload_accesslog_ingest import metrics
from lazyload_testing import certificates
from lazyload_testing import ingest as t
from nats.aio.client import Client as NATS


def _closed(reason: str) -> float:
    return t.metric_value("lazyload_ingest_streams_closed_total", {"reason": reason})


async def _events(observer: NATS) -> int:
    return len(await t.read_dependency_events(observer))


async def test_max_streams(start_ingest, observer: NATS) -> None:
    ingest = await start_ingest(grpc={"max_streams": 1})
    refused = t.metric_value("lazyload_ingest_streams_refused_total")
    async with t.AlsClient(ingest.target) as client:
        first = client.open()
        await first.send(t.message(t.http_entry("details:9080"), ident=t.identifier()))
        await t.eventually(lambda: t.metric_value("lazyload_ingest_streams") >= 1)
        second = client.open()
        with contextlib.suppress(grpc.aio.AioRpcError):
            await second.send(t.message(t.http_entry("reviews:9080"), ident=t.identifier()))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await second.call
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert t.metric_value("lazyload_ingest_streams_refused_total") == refused + 1
        await first.send(t.message(t.http_entry("ratings.shop")))
        await first.close()
        await client.send(t.message(t.http_entry("reviews:9080"), ident=t.identifier()))

    async def three() -> bool:
        return await _events(observer) == 3

    await t.eventually(three, what="the edges of the first and the later stream")


async def test_idle_stream_is_closed(start_ingest) -> None:
    ingest = await start_ingest(grpc={"stream_idle_timeout": 0.3})
    idle = _closed("idle")
    async with t.AlsClient(ingest.target) as client:
        stream = client.open()
        await stream.send(t.message(ident=t.identifier()))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stream.call  # the server ends it
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert _closed("idle") == idle + 1


async def test_garbage_stream_is_closed(start_ingest, observer: NATS) -> None:
    ingest = await start_ingest(grpc={"max_malformed_per_stream": 2})
    malformed = _closed("malformed")
    async with t.AlsClient(ingest.target) as client:
        bad = client.open()
        await bad.send(t.message(t.http_entry("details:9080"), ident=t.identifier()))
        with contextlib.suppress(grpc.aio.AioRpcError):  # a write fails once it is closed
            for _ in range(50):
                await bad.send(b"\xff\xfe garbage")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await bad.call  # the status the server closed it with
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        await client.send(t.message(t.http_entry("reviews:9080"), ident=t.identifier()))
    assert _closed("malformed") == malformed + 1

    async def both() -> bool:
        return await _events(observer) == 2

    await t.eventually(both, what="the edges sent before the garbage and on the other stream")


async def test_message_too_large(start_ingest) -> None:
    ingest = await start_ingest(grpc={"max_message_bytes": 4096})
    big = t.message(*(t.http_entry(f"host-{i}.example.com") for i in range(200)))
    async with t.AlsClient(ingest.target) as client:
        stream = client.open()
        with contextlib.suppress(grpc.aio.AioRpcError):
            await stream.send(big)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stream.call
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> certificates.Certificates:
    return certificates.issue_certificates(tmp_path_factory.mktemp("certs"))


def _credentials(
    certs: certificates.Certificates, client: tuple[Path, Path] | None = None
) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=certs.ca.read_bytes(),
        private_key=client[1].read_bytes() if client else None,
        certificate_chain=client[0].read_bytes() if client else None,
    )


async def _send(target: str, credentials: grpc.ChannelCredentials | None, authority: str) -> None:
    async with t.AlsClient(target, credentials=credentials) as client:
        await client.send(t.message(t.http_entry(authority), ident=t.identifier()))


async def test_tls(start_ingest, observer: NATS, certs: certificates.Certificates) -> None:
    ingest = await start_ingest(
        grpc={"tls_cert_file": str(certs.server_cert), "tls_key_file": str(certs.server_key)}
    )
    await _send(ingest.target, _credentials(certs), "details:9080")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _send(ingest.target, None, "reviews:9080")  # plaintext to a TLS port
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    await t.eventually(lambda: _events(observer), what="the edge sent over TLS")
    assert [m.event.destination_host for m in await t.read_dependency_events(observer)] == [
        "details.default.svc.cluster.local"
    ]


async def test_client_certificates(
    start_ingest,
    observer: NATS,
    certs: certificates.Certificates,
) -> None:
    ingest = await start_ingest(
        grpc={
            "tls_cert_file": str(certs.server_cert),
            "tls_key_file": str(certs.server_key),
            "tls_client_ca_file": str(certs.ca),
            "require_client_cert": True,
        }
    )
    for client in (None, (certs.foreign_client_cert, certs.foreign_client_key)):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _send(ingest.target, _credentials(certs, client), "reviews:9080")
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    await _send(
        ingest.target, _credentials(certs, (certs.client_cert, certs.client_key)), "details:9080"
    )
    await t.eventually(lambda: _events(observer), what="the edge of the trusted client")
    assert [m.event.destination_host for m in await t.read_dependency_events(observer)] == [
        "details.default.svc.cluster.local"
    ]


def _install(source: certificates.Certificates, live: Path) -> None:
    """Put `source`'s server pair into `live` as a Secret volume update would: new files swapped
    in whole."""
    for src, name in ((source.server_cert, "tls.crt"), (source.server_key, "tls.key")):
        staged = live / f".{name}.new"
        staged.write_bytes(src.read_bytes())
        os.replace(staged, live / name)


async def test_rotated_certificates_are_used_without_a_restart(
    start_ingest,
    observer: NATS,
    certs: certificates.Certificates,
    tmp_path: Path,
) -> None:
    rotated = certificates.issue_certificates(tmp_path / "next")  # another CA altogether
    live = tmp_path / "live"
    live.mkdir()
    _install(certs, live)
    ingest = await start_ingest(
        grpc={"tls_cert_file": str(live / "tls.crt"), "tls_key_file": str(live / "tls.key")}
    )
    await _send(ingest.target, _credentials(certs), "details:9080")
    reloaded = metrics.TLS_RELOADS.labels("reloaded")._value.get()
    _install(rotated, live)
    await _send(ingest.target, _credentials(rotated), "reviews:9080")  # a new handshake
    assert metrics.TLS_RELOADS.labels("reloaded")._value.get() == reloaded + 1
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # the old CA is no longer served
        await _send(ingest.target, _credentials(certs), "ratings.shop:9080")
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    # a half-written update keeps the certificates in use and is counted
    failed = metrics.TLS_RELOADS.labels("failed")._value.get()
    (live / "tls.key").write_bytes(b"-----BEGIN PRIVATE KEY-----\ntruncated")
    await _send(ingest.target, _credentials(rotated), "productpage:9080")
    assert metrics.TLS_RELOADS.labels("failed")._value.get() > failed

    async def three() -> bool:
        return await _events(observer) >= 3

    await t.eventually(three, what="the three edges sent over TLS")
    hosts = sorted(m.event.destination_host for m in await t.read_dependency_events(observer))
    assert hosts == [
        "details.default.svc.cluster.local",
        "productpage.default.svc.cluster.local",
        "reviews.default.svc.cluster.local",
    ]
