"""End to end, every joint real: a call through the global-sidecar Envoy to a host the caller does
not know yet becomes a ServiceFence and a Sidecar holding exactly the expected hosts; a malformed
ALS message is rejected and counted while the stream goes on."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import httpx
import pytest
from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2
from google.protobuf import wrappers_pb2
from lazyload_cli import bookinfo, demo
from lazyload_cli.stack import Stack
from lazyload_common.kube import KubeApi, KubeNotFound, api_client
from lazyload_common.settings import KubeSettings
from lazyload_testing import waiting

pytestmark = pytest.mark.e2e

BASE = ["istio-system/*", "mesh-operator/*"]
FENCES = "/apis/microservice.slime.io/v1alpha1/namespaces/default/servicefences"
SIDECARS = "/apis/networking.istio.io/v1/namespaces/default/sidecars"


def _kube(stack: Stack) -> KubeApi:
    return KubeApi(api_client(KubeSettings(kubeconfig=stack.kubeconfig)))


def _wait_for(probe: Any, timeout: float = 15.0) -> Any:
    return waiting.wait_for(
        probe,
        timeout=timeout,
        what=probe.__doc__ or str(probe),
        ignore=(KubeNotFound, AssertionError, KeyError),
    )


def _egress(sidecar: dict[str, Any]) -> list[str]:
    return sidecar["spec"]["egress"][0]["hosts"]


def test_first_calls_become_fences_and_sidecars(stack: Stack) -> None:
    learned, done = asyncio.run(
        demo.run_traffic(stack.endpoints, demo.Console(quiet=True), timeout=30)
    )
    assert done, f"not learned: {[x for x in learned if x.sidecar_written is None]}"
    kube = _kube(stack)
    fqdn = "{}.default.svc.cluster.local".format
    productpage = kube.get(f"{SIDECARS}/productpage")
    assert _egress(productpage) == sorted([*BASE, f"*/{fqdn('details')}", f"*/{fqdn('reviews')}"])
    assert productpage["spec"]["workloadSelector"] == {"labels": {"app": "productpage"}}
    reviews = kube.get(f"{SIDECARS}/reviews")
    assert _egress(reviews) == sorted([*BASE, f"*/{fqdn('ratings')}"])
    fence = kube.get(f"{FENCES}/productpage")
    assert fence["spec"]["enable"] is True
    assert set(fence["status"]["domains"]) == {fqdn("details"), fqdn("reviews")}
    owner = productpage["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "ServiceFence",
        "productpage",
        fence["metadata"]["uid"],
    )
    # Every Service was fenced before any traffic: those that call nobody keep the base Sidecar.
    names = {item["metadata"]["name"] for item in kube.list(SIDECARS)["items"]}
    assert names == {"productpage", "reviews", "details", "ratings"}
    # The SLI: the writer measured first call -> Sidecar for the three learned hosts.
    text = httpx.get(f"{stack.endpoints['admin']['sidecar-writer']}/metrics").text
    counts = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("lazyload_first_call_to_sidecar_seconds_count")
    ]
    assert counts and counts[0] >= 3, counts
    assert _sample(text, 'lazyload_kube_request_seconds_count{verb="create"}') >= 4
    # The reconciler's gauges: four enabled fences, three learned hosts among them.
    text = httpx.get(f"{stack.endpoints['admin']['fence-reconciler']}/metrics").text
    assert _sample(text, 'lazyload_fences{state="enabled"}') == 4
    assert _sample(text, "lazyload_fence_hosts") == 3
    assert _sample(text, 'lazyload_kube_request_seconds_count{verb="list"}') >= 1
    # Consumer lag: every dependency event was fetched (the demo waited for the Sidecars).
    lag = 'lazyload_consumer_pending{consumer="fence-reconciler",stream="LAZYLOAD_DEPS"}'
    assert _sample(text, lag) == 0
    for name in ("details", "ratings"):
        assert _egress(kube.get(f"{SIDECARS}/{name}")) == BASE
    for item in learned:
        assert item.latency_ms is not None and item.latency_ms < 10_000


def _entry(caller_ip: str, authority: str) -> accesslog_pb2.HTTPAccessLogEntry:
    entry = accesslog_pb2.HTTPAccessLogEntry()
    common = entry.common_properties
    common.downstream_direct_remote_address.socket_address.CopyFrom(
        address_pb2.SocketAddress(address=caller_ip, port_value=40000)
    )
    common.downstream_remote_address.socket_address.CopyFrom(
        address_pb2.SocketAddress(address=caller_ip, port_value=40000)
    )
    common.upstream_cluster = "outbound|9080||x"
    common.start_time.GetCurrentTime()
    entry.request.authority = authority
    entry.request.request_method = base_pb2.GET
    entry.response.response_code.CopyFrom(wrappers_pb2.UInt32Value(value=200))
    return entry


def _rejected(stack: Stack) -> float:
    text = httpx.get(f"{stack.endpoints['admin']['accesslog-ingest']}/metrics").text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("lazyload_ingest_rejected_total"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_malformed_als_message_is_counted_and_the_stream_goes_on(stack: Stack) -> None:
    kube = _kube(stack)
    pod_ips = stack.endpoints["pod_ips"]
    with bookinfo.running_mesh(stack.endpoints["global_sidecar_http"], pod_ips) as mesh:
        bookinfo.register(kube, mesh)
        before = _rejected(stack)
        valid = als_pb2.StreamAccessLogsMessage()
        valid.identifier.log_name = "e2e"
        valid.identifier.node.id = "e2e~127.0.0.1~e2e.default~default.svc.cluster.local"
        valid.http_logs.log_entry.append(_entry(pod_ips["details"], "ratings:9080"))
        messages = [b"\x0a\xff\xff\xff\xff garbage that is not protobuf", valid.SerializeToString()]
        with grpc.insecure_channel(stack.endpoints["als_grpc"]) as channel:
            call = channel.stream_unary(
                "/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs",
                request_serializer=bytes,
                response_deserializer=bytes,
            )
            try:
                call(iter(messages), timeout=5)
            except grpc.RpcError as e:  # the server may end the stream after a bad message
                assert e.code() in (
                    grpc.StatusCode.INVALID_ARGUMENT,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                )

        def counted() -> bool:
            """the bad message is counted as rejected"""
            return _rejected(stack) > before

        _wait_for(counted)

        def learned() -> bool:
            """the valid message after it still teaches details -> ratings"""
            sidecar = kube.get(f"{SIDECARS}/details")
            return "*/ratings.default.svc.cluster.local" in _egress(sidecar)

        _wait_for(learned)


def test_reset_from_the_cli_empties_the_learned_hosts(stack: Stack) -> None:
    from lazyload_cli.main import app
    from typer.testing import CliRunner

    admin = stack.endpoints["admin"]["fence-reconciler"]
    listed = CliRunner().invoke(app, ["fences", "list", "--admin", admin])
    assert listed.exit_code == 0, listed.output
    assert "productpage" in listed.output
    state = str(stack.config.state_dir)
    refused = CliRunner().invoke(app, ["fences", "reset", "default/productpage", "--admin", admin])
    assert refused.exit_code == 1 and "401" in refused.output  # no token: nothing reset
    result = CliRunner().invoke(
        app, ["fences", "reset", "default/productpage", "--state-dir", state]
    )
    assert result.exit_code == 0, result.output
    kube = _kube(stack)

    def emptied() -> bool:
        """the reset reaches productpage's Sidecar: only the base hosts are left"""
        return _egress(kube.get(f"{SIDECARS}/productpage")) == BASE

    _wait_for(emptied)
    missing = CliRunner().invoke(app, ["fences", "reset", "default/nope", "--state-dir", state])
    assert missing.exit_code == 4 and "404" in missing.output  # unknown fence


def _sample(text: str, name: str) -> float:
    """The value of the sample `name` (with its labels, as exposed) in a /metrics page."""
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exported")
