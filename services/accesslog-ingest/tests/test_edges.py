"""Edges of one access record (pure): callers, flags, TCP, ordinary sidecars, the event fields.

- the caller comes from the IP index (ready and not-ready Endpoints, EndpointSlices); a pod in
  two Services gives one edge per Service; an unknown address is rejected, never guessed, even
  when the `slime-source-ns` header is there;
- response-flag filtering: NR/NC/DF/IH/DPE/NFCF are unrouted; UH/UF/UT/URX still make edges;
- TCP: the original destination must be a ClusterIP;
- ordinary sidecars (node metadata): the caller is the workload's Service(s) or the workload,
  inbound entries are rejected; the global-sidecar's own metadata never makes it the caller;
- event fields: first_seen from start_time, reporter, protocol, subject-safe names.
"""

from __future__ import annotations

import pytest
from lazyload_accesslog_ingest import edges
from lazyload_accesslog_ingest.records import AccessRecord, Rejection, StreamIdentity
from lazyload_common import events
from lazyload_testing import ingest as t

M = t.SampleMesh
INDEX = t.sample_index()
OPTIONS = edges.Options(cluster_domain="cluster.local", reporter="r1")


BASE = AccessRecord(
    protocol="http",
    caller_ip=M.PRODUCTPAGE_IP,
    authority="details:9080",
    start_time=1_700_000_000.25,
)


def record(**fields: object) -> AccessRecord:
    return BASE._replace(**fields)


def derive(
    rec: AccessRecord, identity: StreamIdentity | None = None
) -> list[events.DependencyObserved] | Rejection:
    return edges.derive(rec, identity, INDEX, OPTIONS, now=1_800_000_000.0)


def derived(
    rec: AccessRecord, identity: StreamIdentity | None = None
) -> list[events.DependencyObserved]:
    """The edges of `rec`, which the test expects to make edges (not a rejection)."""
    found = derive(rec, identity)
    assert isinstance(found, list), found
    return found


def test_edge_fields() -> None:
    [edge] = derived(record())
    assert edge.source_namespace == "default"
    assert edge.source_name == "productpage"
    assert edge.source_kind == "service"
    assert edge.destination_host == "details.default.svc.cluster.local"
    assert edge.destination_port == 9080
    assert (edge.destination_namespace, edge.destination_service) == ("default", "details")
    assert edge.external is False
    assert edge.protocol == "http"
    assert edge.first_seen == 1_700_000_000.25
    assert edge.observed_at == 1_800_000_000.0
    assert edge.reporter == "r1"
    assert edge.edge_key == "default/productpage->details.default.svc.cluster.local:9080"


def test_first_seen_falls_back_to_now() -> None:
    [edge] = derived(record(start_time=None))
    assert edge.first_seen == 1_800_000_000.0


def test_external_edge() -> None:
    [edge] = derived(record(authority="www.example.com"))
    assert edge.external is True
    assert edge.destination_namespace is None and edge.destination_service is None
    assert edge.destination_port is None


@pytest.mark.parametrize(
    ("caller_ip", "callers"),
    [
        (M.PRODUCTPAGE_IP, {("default", "productpage")}),
        (M.REVIEWS_IP, {("default", "reviews")}),
        (M.NOT_READY_IP, {("default", "reviews")}),
        (M.MULTI_IP, {("default", "productpage"), ("default", "frontend")}),
        (M.SLICE_IP, {("shop", "ratings")}),
    ],
)
def test_callers_from_the_ip_index(caller_ip: str, callers: set[tuple[str, str]]) -> None:
    found = derive(record(caller_ip=caller_ip))
    assert isinstance(found, list)
    assert {(e.source_namespace, e.source_name) for e in found} == callers
    assert len(found) == len(callers)


def test_short_name_completes_with_each_callers_namespace() -> None:
    [edge] = derived(record(caller_ip=M.SLICE_IP, authority="reviews:9080"))
    assert edge.destination_host == "reviews.shop.svc.cluster.local"


def test_unknown_caller_is_never_guessed() -> None:
    rec = record(caller_ip="10.9.9.9", source_namespace_header="default")
    assert derive(rec) is Rejection.UNKNOWN_CALLER


@pytest.mark.parametrize(
    ("flags", "code", "published"),
    [
        ((), 200, True),
        (("NR",), 404, False),
        (("NC",), 503, False),
        (("DF",), 503, False),
        (("IH",), 400, False),
        (("DPE",), 400, False),
        (("NFCF",), 500, False),
        (("NR", "UH"), 404, False),
        (("UH",), 503, True),
        (("UF", "URX"), 503, True),
        (("UT",), 504, True),
        (("DC",), None, True),
        ((), 404, True),  # a 404 from the destination itself: it was reached
    ],
)
def test_response_flags(flags: tuple[str, ...], code: int | None, published: bool) -> None:
    found = derive(record(response_flags=frozenset(flags), response_code=code))
    if published:
        assert isinstance(found, list) and len(found) == 1
    else:
        assert found is Rejection.UNROUTED


def test_unrouted_beats_unknown_caller() -> None:
    rec = record(caller_ip="10.9.9.9", response_flags=frozenset({"NR"}))
    assert derive(rec) is Rejection.UNROUTED


@pytest.mark.parametrize(
    ("original", "port", "expected"),
    [
        (M.DETAILS_CLUSTER_IP, 9080, ("details.default.svc.cluster.local", 9080)),
        (M.RATINGS_CLUSTER_IP, 3306, ("ratings.shop.svc.cluster.local", 3306)),
        ("10.96.9.9", 3306, Rejection.TCP_UNKNOWN_DESTINATION),
        ("", None, Rejection.TCP_UNKNOWN_DESTINATION),
    ],
)
def test_tcp(original: str, port: int | None, expected: object) -> None:
    rec = AccessRecord(
        protocol="tcp", caller_ip=M.PRODUCTPAGE_IP, original_ip=original, original_port=port
    )
    found = derive(rec)
    if isinstance(expected, Rejection):
        assert found is expected
    else:
        assert isinstance(found, list)
        [edge] = found
        assert (edge.destination_host, edge.destination_port) == expected
        assert edge.protocol == "tcp"
        assert edge.external is False


SIDECAR = StreamIdentity(
    node_id="sidecar~10.1.0.7~web-1.default~default.svc.cluster.local",
    namespace="default",
    workload="web",
    labels={"tier": "web", "app": "web"},
)


def test_sidecar_caller_from_node_metadata() -> None:
    # the address would say productpage; the stream's workload wins
    found = derive(record(upstream_cluster="outbound|9080||details"), SIDECAR)
    assert isinstance(found, list)
    assert [(e.source_namespace, e.source_name) for e in found] == [("default", "frontend")]


def test_sidecar_without_service_is_a_workload_caller() -> None:
    lonely = StreamIdentity(namespace="batch", workload="cron-7", labels={"job": "x"})
    [edge] = derived(record(caller_ip="10.9.9.9"), lonely)
    assert (edge.source_namespace, edge.source_name, edge.source_kind) == (
        "batch",
        "cron-7",
        "workload",
    )
    assert edge.destination_host == "details.batch.svc.cluster.local"


def test_sidecar_without_workload_or_service_is_unknown() -> None:
    anonymous = StreamIdentity(namespace="batch")
    assert derive(record(), anonymous) is Rejection.UNKNOWN_CALLER


def test_sidecar_inbound_entries_are_rejected() -> None:
    rec = record(upstream_cluster="inbound|9080||")
    assert derive(rec, SIDECAR) is Rejection.INBOUND


def test_global_sidecar_identity_uses_addresses() -> None:
    gs = StreamIdentity(namespace="mesh-operator", workload="global-sidecar", global_sidecar=True)
    found = derive(record(upstream_cluster="inbound|80||"), gs)
    assert isinstance(found, list)
    assert [(e.source_namespace, e.source_name) for e in found] == [("default", "productpage")]


def test_identity_without_metadata_uses_addresses() -> None:
    found = derive(record(), StreamIdentity(node_id="global-sidecar"))
    assert isinstance(found, list) and found[0].source_name == "productpage"


def test_grpc_protocol_is_kept() -> None:
    [edge] = derived(record(protocol="grpc"))
    assert edge.protocol == "grpc"
