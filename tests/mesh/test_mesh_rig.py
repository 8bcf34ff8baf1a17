"""The real-Istio rig itself: istiod on a real API server, pods in network namespaces with real
sidecars (pilot-agent + stock Envoy), traffic that goes through both sidecars with mutual TLS,
and a pod network from which nothing escapes to the machine's uplink."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator

import pytest
from lazyload_cli.podnet import POD_RANGE, SERVICE_RANGE
from lazyload_testing.mesh import IstioMesh, PacketCapture, WorkloadCallError, uplink_interfaces

pytestmark = [pytest.mark.real, pytest.mark.mesh]

NS = "rig"


@contextlib.contextmanager
def capturing(interfaces: Iterable[str]) -> Iterator[list[PacketCapture]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(PacketCapture(i)) for i in interfaces]


def test_a_call_goes_through_both_sidecars(istio_mesh: IstioMesh) -> None:
    callee = istio_mesh.add_workload(NS, "callee", {"http": 80, "tcp-echo": 9000, "grpc": 9090})
    caller = istio_mesh.add_workload(NS, "caller", {"http": 80})
    http_cluster = f"outbound|80||{callee.host}"
    tcp_cluster = f"outbound|9000||{callee.host}"
    grpc_cluster = f"outbound|9090||{callee.host}"

    # istiod pushed the callee's Service to the caller's sidecar, and stock Envoy took all of
    # istiod's config (no NACK of any type; see libs/testing/README.md for what that needs)
    clusters = set(caller.wait_for_clusters(http_cluster, tcp_cluster, grpc_cluster))
    assert {http_cluster, tcp_cluster, grpc_cluster} <= clusters
    for workload in (caller, callee):
        resources = workload.wait_synced()["resources"]
        assert {t.rsplit(".", 1)[-1] for t in resources} >= {
            "Cluster",
            "ClusterLoadAssignment",
            "Listener",
            "RouteConfiguration",
        }

    status, body = caller.http_get(f"http://{callee.host}/hello?x=1")
    assert status == 200, body
    echo = json.loads(body)
    assert echo["workload"] == "callee"
    assert echo["path"] == "/hello?x=1"
    # The callee's sidecar delivered it (Envoy's inbound passthrough source address) after
    # terminating mutual TLS: it vouches for the caller's ServiceAccount identity in XFCC.
    assert echo["peer"] == "127.0.0.6"
    xfcc = echo["headers"]["x-forwarded-client-cert"]
    assert f"By=spiffe://cluster.local/ns/{NS}/sa/callee" in xfcc
    assert f"URI=spiffe://cluster.local/ns/{NS}/sa/caller" in xfcc
    # and the caller's sidecar sent it through the callee's outbound cluster, to the callee's
    # pod, whose sidecar passed it to the application through its inbound cluster
    assert caller.host_counters(http_cluster)[f"{callee.ip}:80"]["rq_success"] == 1
    assert callee.host_counters("inbound|80||")[f"{callee.ip}:80"]["rq_success"] == 1

    # short names resolve in the caller's namespace, as kube-dns answers them
    status, _ = caller.http_get("http://callee/")
    assert status == 200

    # raw TCP on a tcp- port: through both sidecars' TCP proxies
    assert caller.tcp_echo("callee", 9000, b"ping over tcp") == b"ping over tcp"
    assert caller.host_counters(tcp_cluster)[f"{callee.ip}:9000"]["cx_total"] == 1
    assert callee.host_counters("inbound|9000||")[f"{callee.ip}:9000"]["cx_total"] == 1

    # gRPC on a grpc port: h2 through both sidecars, metadata and method delivered
    code, body = caller.grpc_call(callee.host, 9090, "/demo.Echo/Say", b"hi", {"x-demo": "1"})
    assert code == "OK", body
    echo = json.loads(body)
    assert (echo["workload"], echo["method"], echo["request"]) == ("callee", "/demo.Echo/Say", "hi")
    assert echo["metadata"]["x-demo"] == "1"
    assert caller.host_counters(grpc_cluster)[f"{callee.ip}:9090"]["rq_success"] == 1


def test_a_packet_to_an_unused_pod_address_never_leaves(istio_mesh: IstioMesh) -> None:
    caller = istio_mesh.add_workload(NS, "lonely", {"http": 80})
    on_this_subnet = istio_mesh.network.unused_address()  # on the rig's bridge, nobody answers ARP
    other_subnet = "10.244.1.250" if istio_mesh.network.index != 1 else "10.244.2.250"
    unused_service_ip = "10.111.222.250"
    services = istio_mesh.api.list("/api/v1/services")["items"]
    assert unused_service_ip not in {s["spec"].get("clusterIP") for s in services}
    uplinks = uplink_interfaces()
    assert uplinks, "no default route: nothing to check against"

    with PacketCapture(istio_mesh.network.bridge) as pod_network, capturing(uplinks) as captures:
        for target in (on_this_subnet, other_subnet, unused_service_ip):
            try:
                status, body = caller.http_get(f"http://{target}/", timeout=3)
            except WorkloadCallError:
                continue  # no answer within 3 s
            assert status == 503, body  # the sidecar's PassthroughCluster could not connect

    # The sidecar really sent them (ALLOW_ANY passthrough): ARP for the address on the bridge's
    # subnet, the packets themselves to the gateway for the others...
    assert on_this_subnet in pod_network.arp_requests
    sent = set(pod_network.touching(POD_RANGE, SERVICE_RANGE))
    assert (caller.ip, other_subnet) in sent
    assert (caller.ip, unused_service_ip) in sent
    # ...and none of them, nor anything else of the pod or Service range, reached an uplink.
    for capture in captures:
        assert capture.touching(POD_RANGE, SERVICE_RANGE) == [], capture.interface


def test_stock_envoy_nacks_istio_stats_so_the_rig_configures_no_metrics_provider(
    istio_mesh: IstioMesh,
) -> None:
    """Why the rig's mesh config has no `defaultProviders.metrics`: with one, istiod adds Istio's
    stats filter, which only Istio's Envoy build has, to every listener."""
    workload = istio_mesh.add_workload(NS, "metered", {"http": 80})
    synced = workload.wait_synced()
    config = istio_mesh.mesh_config()
    try:
        istio_mesh.set_mesh_config({**config, "defaultProviders": {"metrics": ["prometheus"]}})
        with pytest.raises(WorkloadCallError) as nack:
            workload.wait_synced(newer_than=synced)
        assert (
            "Didn't find a registered implementation for 'istio.stats' with type URL: "
            "'stats.PluginConfig'" in str(nack.value)
        )
    finally:
        istio_mesh.set_mesh_config(config)
    # back to a config it takes: the next push is ACKed again
    workload.wait_synced(nack_fails=False)
