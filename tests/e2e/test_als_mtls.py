"""`lazyload up --secure` (issue 16): the ALS port takes only mutual TLS with a certificate of the
stack's own CA. The global-sidecar's Envoy (its ALS cluster rendered by global-pilot with the
client certificate) streams, so first calls are still learned; a plaintext client, a TLS client
without a certificate and one with a foreign CA's certificate cannot stream, and what they sent
teaches nothing. endpoints.json names the CA and the client certificate (`als_tls`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from envoy.service.accesslog.v3 import als_pb2
from lazyload_cli import bookinfo, demo
from lazyload_cli.stack import Stack, StackConfig
from lazyload_common.kube import KubeApi, KubeNotFound, api_client
from lazyload_common.settings import KubeSettings
from lazyload_testing import certificates
from lazyload_testing.kube_real import kube_mode

from .test_first_call_to_sidecar import SIDECARS, _egress, _entry

pytestmark = pytest.mark.e2e
STREAM = "/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs"


@pytest.fixture(scope="module")
def secure_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state_dir: Path = tmp_path_factory.mktemp("secure-stack")
    config = StackConfig(state_dir=state_dir, kube=kube_mode(), secure=True)
    with Stack(config) as running:
        yield running


def _details_egress(kube: KubeApi) -> list[str]:
    try:
        return _egress(kube.get(f"{SIDECARS}/details"))
    except KubeNotFound:
        return []


def _stream(channel: grpc.Channel, message: als_pb2.StreamAccessLogsMessage) -> grpc.StatusCode:
    call = channel.stream_unary(STREAM, request_serializer=bytes, response_deserializer=bytes)
    try:
        call(iter([message.SerializeToString()]), timeout=5)
    except grpc.RpcError as e:
        return e.code()
    return grpc.StatusCode.OK


def test_only_the_stacks_client_certificate_may_stream(secure_stack: Stack, tmp_path: Path) -> None:
    endpoints = secure_stack.endpoints
    tls = endpoints["als_tls"]
    assert tls["server_name"] == "accesslog-ingest"
    assert Path(tls["client_key_file"]).stat().st_mode & 0o077 == 0
    kube = KubeApi(api_client(KubeSettings(kubeconfig=secure_stack.kubeconfig)))
    pod_ips = endpoints["pod_ips"]
    with bookinfo.running_mesh(endpoints["global_sidecar_http"], pod_ips) as mesh:
        bookinfo.register(kube, mesh)
        # the attack: a forged log (details -> ratings) from a client without the certificate
        forged = als_pb2.StreamAccessLogsMessage()
        forged.identifier.log_name = "e2e"
        forged.identifier.node.id = "e2e~127.0.0.1~e2e.default~default.svc.cluster.local"
        forged.http_logs.log_entry.append(_entry(pod_ips["details"], "ratings:9080"))
        ca = Path(tls["ca_file"]).read_bytes()
        options = (("grpc.ssl_target_name_override", "accesslog-ingest"),)
        foreign = certificates.issue_certificates(tmp_path / "foreign")
        attempts = {
            "plaintext": grpc.insecure_channel(endpoints["als_grpc"]),
            "no client certificate": grpc.secure_channel(
                endpoints["als_grpc"], grpc.ssl_channel_credentials(ca), options
            ),
            "a foreign CA's certificate": grpc.secure_channel(
                endpoints["als_grpc"],
                grpc.ssl_channel_credentials(
                    ca,
                    foreign.foreign_client_key.read_bytes(),
                    foreign.foreign_client_cert.read_bytes(),
                ),
                options,
            ),
        }
        for what, channel in attempts.items():
            with channel:
                assert _stream(channel, forged) == grpc.StatusCode.UNAVAILABLE, what
        # the global-sidecar streams over mutual TLS: first calls are learned as before
        learned, done = asyncio.run(
            demo.run_traffic(endpoints, demo.Console(quiet=True), timeout=45)
        )
        assert done, f"not learned over mTLS: {[x for x in learned if x.sidecar_written is None]}"
        # an edge the forged streams had taught would have been published before the traffic just
        # learned, and learned with it: not there (and below, the same log over the stack's own
        # certificate is learned, so this absence is one the test can see)
        ratings = "*/ratings.default.svc.cluster.local"
        assert ratings not in _details_egress(kube)
        # and a client with the stack's own client certificate may stream
        with grpc.secure_channel(
            endpoints["als_grpc"],
            grpc.ssl_channel_credentials(
                ca,
                Path(tls["client_key_file"]).read_bytes(),
                Path(tls["client_cert_file"]).read_bytes(),
            ),
            options,
        ) as channel:
            assert _stream(channel, forged) == grpc.StatusCode.OK
        # and what it streams is learned: the absence above is one the test can see
        deadline = time.monotonic() + 30
        while ratings not in _details_egress(kube):
            assert time.monotonic() < deadline, "the certified stream's edge was not learned"
            time.sleep(0.2)
