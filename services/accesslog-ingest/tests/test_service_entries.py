"""Hosts that are no Service, matched against Istio ServiceEntries (pure, and through the app).

- the index keeps each ServiceEntry's `spec.hosts`: exact names and `*.suffix` wildcards (any
  depth below the suffix, never the suffix itself), the longest wildcard wins, an exact host
  beats a wildcard, ties go to the first ServiceEntry by namespace/name; updates and deletes
  replace a ServiceEntry's hosts; hosts that are no DNS name (or `*` alone) are ignored;
- an edge to a ServiceEntry host is `external=True` with `destination_namespace` = the
  ServiceEntry's namespace and no `destination_service`; any other non-Service host is a plain
  external edge (no namespace); Service hosts are never looked up as ServiceEntries;
- `addresses` (IPs and CIDRs): a TCP original destination or an IP authority inside one is an
  edge to the entry's first concrete host (the most specific network wins; an entry of wildcards
  only names no host); a ClusterIP still wins;
- `exportTo` (`.`, `~`, `*`, namespaces): an entry a caller's namespace cannot see matches nothing
  for that caller;
- through `app.run` fed by the emulator: a ServiceEntry created in the API marks its hosts.
"""

from __future__ import annotations

import pytest
from lazyload_accesslog_ingest import edges, indexing
from lazyload_accesslog_ingest.records import AccessRecord, Rejection, ServiceRef
from lazyload_common import events
from lazyload_testing import ingest as t

M = t.SampleMesh
OPTIONS = edges.Options(cluster_domain="cluster.local")


def entry_index(*entries: tuple[str, str, list[str]]) -> indexing.ServiceIndex:
    index = indexing.ServiceIndex()
    for namespace, name, hosts in entries:
        index.apply_service_entry("ADDED", t.service_entry(namespace, name, hosts))
    return index


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("api.example.com", ("a", "exact")),
        ("x.example.com", ("a", "wild")),
        ("x.y.example.com", ("a", "wild")),
        ("example.com", None),
        ("deep.api.example.com", ("a", "wild")),
        ("x.eu.example.com", ("b", "eu")),  # the longest wildcard wins
        ("eu.example.com", ("a", "wild")),
        ("other.org", None),
        ("notexample.com", None),
        ("shared.example.org", ("a", "first")),  # tie: first by namespace/name
    ],
)
def test_matching(host: str, expected: tuple[str, str] | None) -> None:
    index = entry_index(
        ("a", "exact", ["api.example.com"]),
        ("a", "wild", ["*.example.com"]),
        ("b", "eu", ["*.eu.example.com"]),
        ("z", "second", ["shared.example.org"]),
        ("a", "first", ["Shared.Example.org."]),
    )
    found = index.service_entry_for(host)
    assert found == (ServiceRef(*expected) if expected else None)


def test_invalid_hosts_are_ignored() -> None:
    index = entry_index(("a", "bad", ["*", "no spaces.com", "a/b.com", "*.*.x.com", "ok.com"]))
    assert index.service_entry_for("ok.com") == ServiceRef("a", "bad")
    assert index.service_entry_for("anything.com") is None
    assert index.service_entry_for("y.x.com") is None


def test_modify_and_delete() -> None:
    index = entry_index(("a", "se", ["one.example.com", "*.wild.example.com"]))
    index.apply_service_entry("MODIFIED", t.service_entry("a", "se", ["two.example.com"]))
    assert index.service_entry_for("one.example.com") is None
    assert index.service_entry_for("x.wild.example.com") is None
    assert index.service_entry_for("two.example.com") == ServiceRef("a", "se")
    index.apply_service_entry("DELETED", t.service_entry("a", "se", []))
    assert index.service_entry_for("two.example.com") is None


def _edge(authority: str, index: indexing.ServiceIndex | None = None) -> events.DependencyObserved:
    rec = AccessRecord(protocol="http", caller_ip=M.PRODUCTPAGE_IP, authority=authority)
    result = edges.derive(rec, None, index or t.sample_index(), OPTIONS, now=1.0)
    assert isinstance(result, list) and len(result) == 1
    return result[0]


@pytest.mark.parametrize(
    ("authority", "namespace"),
    [
        ("api.payments.example:443", "egress"),
        ("API.Payments.Example.", "egress"),
        ("checkout.stripe.example", "egress"),
        ("a.b.stripe.example:8443", "egress"),
        ("stripe.example", None),
        ("www.example.com", None),
    ],
)
def test_edges_to_service_entry_hosts(authority: str, namespace: str | None) -> None:
    edge = _edge(authority)
    assert edge.external is True
    assert edge.destination_namespace == namespace
    assert edge.destination_service is None


def test_services_win_over_service_entries() -> None:
    index = t.sample_index()
    index.apply_service_entry(
        "ADDED", t.service_entry("egress", "greedy", ["*.default", "*.cluster.local"])
    )
    edge = _edge("details.default:9080", index)
    assert edge.external is False
    assert edge.destination_service == "details"


def _derive(
    record: AccessRecord, index: indexing.ServiceIndex
) -> list[events.DependencyObserved] | Rejection:
    return edges.derive(record, None, index, OPTIONS, now=1.0)


def _address_index() -> indexing.ServiceIndex:
    index = t.sample_index()  # the caller, productpage, is in `default`
    for obj in (
        t.service_entry(
            "egress", "db", ["*.db.example", "orders.db.example"], addresses=["192.0.2.10"]
        ),
        t.service_entry("egress", "net", ["partners.example"], addresses=["198.51.100.0/24"]),
        t.service_entry("egress", "one", ["vip.partners.example"], addresses=["198.51.100.7"]),
        t.service_entry("egress", "wild", ["*.wild.example"], addresses=["203.0.113.5"]),
        t.service_entry("egress", "v6", ["v6.example"], addresses=["2001:db8::/64"]),
        t.service_entry(
            "egress", "bad", ["bad.example"], addresses=["not-an-address", "192.0.2.99"]
        ),
        t.service_entry(
            "shop", "private", ["private.example"], addresses=["192.0.2.20"], export_to=["."]
        ),
        t.service_entry(
            "egress", "hidden", ["hidden.example"], addresses=["192.0.2.30"], export_to=["~"]
        ),
        t.service_entry(
            "egress",
            "listed",
            ["listed.example"],
            addresses=["192.0.2.40"],
            export_to=["default", "shop"],
        ),
    ):
        index.apply_service_entry("ADDED", obj)
    return index


@pytest.mark.parametrize(
    ("original", "host", "entry"),
    [
        ("192.0.2.10", "orders.db.example", ("egress", "db")),  # the first concrete host
        ("198.51.100.9", "partners.example", ("egress", "net")),  # inside a CIDR
        ("198.51.100.7", "vip.partners.example", ("egress", "one")),  # most specific wins
        ("2001:db8::5", "v6.example", ("egress", "v6")),
        ("192.0.2.99", "bad.example", ("egress", "bad")),  # a bad address beside a good one
        ("192.0.2.40", "listed.example", ("egress", "listed")),  # exported to default
        ("203.0.113.5", None, None),  # wildcards only: the address names no host
        ("192.0.2.20", None, None),  # exportTo "." of namespace shop: default cannot see it
        ("192.0.2.30", None, None),  # exportTo "~": nobody
        ("192.0.2.77", None, None),  # no entry holds it
    ],
)
def test_tcp_to_service_entry_addresses(
    original: str, host: str | None, entry: tuple[str, str] | None
) -> None:
    rec = AccessRecord(
        protocol="tcp", caller_ip=M.PRODUCTPAGE_IP, original_ip=original, original_port=5432
    )
    result = _derive(rec, _address_index())
    if host is None:
        assert result is Rejection.TCP_UNKNOWN_DESTINATION
        return
    assert isinstance(result, list) and len(result) == 1
    edge = result[0]
    assert (edge.destination_host, edge.destination_port) == (host, 5432)
    assert edge.external is True and edge.protocol == "tcp"
    assert entry is not None
    assert (edge.destination_namespace, edge.destination_service) == (entry[0], None)


def test_ip_authority_in_a_service_entry_address() -> None:
    index = _address_index()
    rec = AccessRecord(protocol="http", caller_ip=M.PRODUCTPAGE_IP, authority="192.0.2.10:8443")
    result = _derive(rec, index)
    assert isinstance(result, list)
    assert (result[0].destination_host, result[0].destination_port) == ("orders.db.example", 8443)
    hidden = AccessRecord(protocol="http", caller_ip=M.PRODUCTPAGE_IP, authority="192.0.2.30")
    assert _derive(hidden, index) is Rejection.IP_AUTHORITY


def test_a_cluster_ip_wins_over_a_service_entry_address() -> None:
    index = _address_index()
    index.apply_service_entry(
        "ADDED",
        t.service_entry("egress", "overlap", ["x.example"], addresses=["10.96.0.0/16"]),
    )
    rec = AccessRecord(
        protocol="tcp",
        caller_ip=M.PRODUCTPAGE_IP,
        original_ip=M.DETAILS_CLUSTER_IP,
        original_port=9080,
    )
    result = _derive(rec, index)
    assert isinstance(result, list) and result[0].destination_service == "details"


@pytest.mark.parametrize(
    ("export_to", "caller_namespace", "visible"),
    [
        (None, "default", True),
        ([], "default", True),
        (["*"], "default", True),
        (["."], "egress", True),
        (["."], "default", False),
        (["~"], "egress", False),
        (["default"], "default", True),
        (["shop", "."], "default", False),
        (["shop", "."], "shop", True),
    ],
)
def test_export_to_decides_who_sees_a_host(
    export_to: list[str] | None, caller_namespace: str, visible: bool
) -> None:
    index = indexing.ServiceIndex()
    index.apply_service_entry(
        "ADDED", t.service_entry("egress", "api", ["api.example"], export_to=export_to)
    )
    found = index.service_entry_for("api.example", caller_namespace)
    assert found == (ServiceRef("egress", "api") if visible else None)
    assert index.service_entry_for("api.example") == ServiceRef("egress", "api")  # no caller


def test_an_entry_hidden_from_the_caller_makes_a_plain_external_edge() -> None:
    index = t.sample_index()
    index.apply_service_entry(
        "ADDED", t.service_entry("egress", "private", ["private.example"], export_to=["."])
    )
    edge = _edge("private.example", index)
    assert edge.external is True and edge.destination_namespace is None


def test_addresses_follow_updates_and_deletes() -> None:
    index = indexing.ServiceIndex()
    obj = t.service_entry("egress", "db", ["db.example"], addresses=["192.0.2.10"])
    index.apply_service_entry("ADDED", obj)
    assert index.service_entry_at("192.0.2.10") == (ServiceRef("egress", "db"), "db.example")
    moved = t.service_entry("egress", "db", ["db.example"], addresses=["192.0.2.11"])
    index.apply_service_entry("MODIFIED", moved)
    assert index.service_entry_at("192.0.2.10") is None
    assert index.service_entry_at("192.0.2.11") == (ServiceRef("egress", "db"), "db.example")
    index.apply_service_entry("DELETED", moved)
    assert index.service_entry_at("192.0.2.11") is None
