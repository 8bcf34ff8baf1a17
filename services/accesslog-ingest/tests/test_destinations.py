"""Destination normalisation and completion (pure, no I/O).

- authority normalisation: case, trailing dot, port split and kept, IPv6 brackets, bad ports;
- completion Slime's way: 1 label -> caller namespace; `svc.ns` / `svc.ns.svc` -> FQDN only when
  the Service exists; `svc.ns.svc.<domain>` kept; anything else external;
- IP literals: a ClusterIP becomes its Service, any other IP is rejected;
- a custom cluster domain;
- properties over random authorities (alone and in whole ALS messages) and random bytes: never
  raises, never yields an invalid host, idempotent.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lazyload_accesslog_ingest import edges, ingesting
from lazyload_accesslog_ingest.records import Rejection, ServiceRef
from lazyload_common import hosts
from lazyload_testing import ingest as t

INDEX = t.sample_index()
M = t.SampleMesh
DETAILS = "details.default.svc.cluster.local"
RATINGS = "ratings.shop.svc.cluster.local"


@pytest.mark.parametrize(
    ("authority", "host", "port", "service"),
    [
        # short names complete with the caller's namespace
        ("details", DETAILS, None, ("default", "details")),
        ("details:9080", DETAILS, 9080, ("default", "details")),
        ("DETAILS:9080", DETAILS, 9080, ("default", "details")),
        ("details.:9080", DETAILS, 9080, ("default", "details")),
        ("  details:9080 ", DETAILS, 9080, ("default", "details")),
        # a short name is a Service of the caller's namespace even before the index knows it
        ("newsvc:80", "newsvc.default.svc.cluster.local", 80, ("default", "newsvc")),
        # svc.ns and svc.ns.svc: FQDN when the Service exists
        ("ratings.shop", RATINGS, None, ("shop", "ratings")),
        ("ratings.shop:9080", RATINGS, 9080, ("shop", "ratings")),
        ("ratings.shop.svc:9080", RATINGS, 9080, ("shop", "ratings")),
        ("Ratings.Shop.Svc.", RATINGS, None, ("shop", "ratings")),
        # ...else kept as written, external
        ("ratings.nowhere", "ratings.nowhere", None, None),
        ("ratings.nowhere.svc:80", "ratings.nowhere.svc", 80, None),
        ("www.example.com", "www.example.com", None, None),
        ("www.example.com.:443", "www.example.com", 443, None),
        ("api.example.com:8443", "api.example.com", 8443, None),
        # the full name stays, and is a Service by its form
        (f"{DETAILS}:9080", DETAILS, 9080, ("default", "details")),
        (f"{DETAILS}.", DETAILS, None, ("default", "details")),
        (
            "ghost.nowhere.svc.cluster.local",
            "ghost.nowhere.svc.cluster.local",
            None,
            ("nowhere", "ghost"),
        ),
        # longer names under the domain are not Services
        ("a.b.c.svc.cluster.local", "a.b.c.svc.cluster.local", None, None),
        # IP literals: ClusterIPs only
        (f"{M.DETAILS_CLUSTER_IP}:9080", DETAILS, 9080, ("default", "details")),
        (M.RATINGS_CLUSTER_IP, RATINGS, None, ("shop", "ratings")),
    ],
)
def test_completion(
    authority: str, host: str, port: int | None, service: tuple[str, str] | None
) -> None:
    dest = edges.http_destination(authority, "default", INDEX, "cluster.local")
    assert isinstance(dest, edges.Destination), dest
    assert (dest.host, dest.port) == (host, port)
    assert dest.service == (ServiceRef(*service) if service else None)


@pytest.mark.parametrize(
    ("authority", "reason"),
    [
        ("", Rejection.INVALID_HOST),
        (":80", Rejection.INVALID_HOST),
        ("details:0", Rejection.INVALID_HOST),
        ("details:65536", Rejection.INVALID_HOST),
        ("details:http", Rejection.INVALID_HOST),
        ("details:", Rejection.INVALID_HOST),
        ("*.example.com", Rejection.INVALID_HOST),
        ("under_score.example.com", Rejection.INVALID_HOST),
        ("-lead.example.com", Rejection.INVALID_HOST),
        ("a..b", Rejection.INVALID_HOST),
        ("user@host", Rejection.INVALID_HOST),
        ("détails", Rejection.INVALID_HOST),
        ("host/path", Rejection.INVALID_HOST),
        ("x" * 64, Rejection.INVALID_HOST),
        ("[::1", Rejection.INVALID_HOST),
        ("10.0.0.1", Rejection.IP_AUTHORITY),
        ("10.0.0.1:8080", Rejection.IP_AUTHORITY),
        ("[fd00::1]:80", Rejection.IP_AUTHORITY),
        ("fd00::1", Rejection.IP_AUTHORITY),
        ("a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 63, Rejection.INVALID_HOST),
    ],
)
def test_rejected_authorities(authority: str, reason: Rejection) -> None:
    assert edges.http_destination(authority, "default", INDEX, "cluster.local") is reason


def test_short_name_needs_a_namespace() -> None:
    assert edges.http_destination("details", "", INDEX, "cluster.local") is Rejection.UNKNOWN_CALLER


def test_completed_name_too_long_is_rejected() -> None:
    long_ns, name = "n" * 63, "s" * 63
    domain = ".".join(["d" * 40] * 3)  # 63 + 1 + 63 + len(".svc.") + 122 = 254 > 253
    dest = edges.http_destination(name, long_ns, INDEX, domain)
    assert dest is Rejection.INVALID_HOST


def test_custom_cluster_domain() -> None:
    index = t.sample_index()
    dest = edges.http_destination("ratings.shop", "default", index, "corp.example")
    assert isinstance(dest, edges.Destination)
    assert dest.host == "ratings.shop.svc.corp.example"
    kept = edges.http_destination(
        "ratings.shop.svc.cluster.local", "default", index, "corp.example"
    )
    assert isinstance(kept, edges.Destination)
    assert kept.service is None  # not under this cluster's domain: external


@pytest.mark.parametrize(
    ("authority", "expected"),
    [
        ("Details.:9080", ("details", 9080)),
        ("[FD00::1]:80", ("fd00::1", 80)),
        ("example.com", ("example.com", None)),
        ("bad:port", Rejection.INVALID_HOST),
    ],
)
def test_normalise_authority(authority: str, expected: object) -> None:
    assert edges.normalise_authority(authority) == expected


_LABEL = st.from_regex(r"[a-zA-Z0-9\-_*]{0,12}", fullmatch=True)
_AUTHORITY = st.one_of(
    st.text(max_size=80),
    st.builds(
        lambda labels, dot, port: ".".join(labels) + dot + port,
        st.lists(_LABEL, min_size=1, max_size=6),
        st.sampled_from(["", "."]),
        st.sampled_from(["", ":80", ":9080", ":0", ":99999", ":x", ":"]),
    ),
    st.ip_addresses().map(str),
    st.ip_addresses(v=6).map(lambda ip: f"[{ip}]:443"),
)


@given(authority=_AUTHORITY, namespace=st.sampled_from(["default", "shop", "", "Bad_NS"]))
def test_never_raises_and_never_yields_an_invalid_host(authority: str, namespace: str) -> None:
    dest = edges.http_destination(authority, namespace, INDEX, "cluster.local")
    if isinstance(dest, edges.Destination):
        assert hosts.is_valid_host(dest.host), dest
        assert dest.port is None or 0 < dest.port < 65536
        if dest.service is not None:
            assert dest.host == hosts.service_fqdn(
                dest.service.name, dest.service.namespace, "cluster.local"
            )
    else:
        assert isinstance(dest, Rejection)


@given(authority=_AUTHORITY)
def test_completion_is_idempotent(authority: str) -> None:
    dest = edges.http_destination(authority, "default", INDEX, "cluster.local")
    if isinstance(dest, edges.Destination):
        again = edges.http_destination(dest.host, "shop", INDEX, "cluster.local")
        assert isinstance(again, edges.Destination)
        assert again.host == dest.host


_INGESTOR = ingesting.Ingestor(INDEX)


@given(
    authorities=st.lists(_AUTHORITY, min_size=1, max_size=5),
    caller=st.sampled_from([M.PRODUCTPAGE_IP, M.MULTI_IP, "10.9.9.9", "", "not-an-ip"]),
    flags=st.lists(st.sampled_from(["NR", "NC", "UH", "UF", "DC"]), max_size=2),
)
def test_whole_messages_never_publish_an_invalid_host(
    authorities: list[str], caller: str, flags: list[str]
) -> None:
    msg = t.message(*(t.http_entry(a, caller=caller, flags=flags) for a in authorities))
    outcome = _INGESTOR.ingest(msg.SerializeToString(), ingesting.StreamState())
    assert sum(outcome.entries.values()) == len(authorities)
    assert Rejection.INTERNAL not in outcome.rejections
    for edge in outcome.edges:
        assert hosts.is_valid_host(edge.destination_host), edge
    # every entry gave an edge or a rejection (`edges` holds an edge once per message: `derived`
    # counts repeats too)
    assert outcome.derived + sum(outcome.rejections.values()) >= len(authorities)


@given(raw=st.binary(max_size=200))
def test_random_bytes_never_raise(raw: bytes) -> None:
    outcome = _INGESTOR.ingest(raw, ingesting.StreamState())
    assert Rejection.INTERNAL not in outcome.rejections
    for edge in outcome.edges:
        assert hosts.is_valid_host(edge.destination_host)
