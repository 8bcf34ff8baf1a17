"""Hosts that are no Service, matched against Istio ServiceEntries (pure, and through the app).

- the index keeps each ServiceEntry's `spec.hosts`: exact names and `*.suffix` wildcards (any
  depth below the suffix, never the suffix itself), the longest wildcard wins, an exact host
  beats a wildcard, ties go to the first ServiceEntry by namespace/name; updates and deletes
  replace a ServiceEntry's hosts; hosts that are no DNS name (or `*` alone) are ignored;
- an edge to a ServiceEntry host is `external=True` with `destination_namespace` = the
  ServiceEntry's namespace and no `destination_service`; any other non-Service host is a plain
  external edge (no namespace); Service hosts are never looked up as ServiceEntries;
- through `app.run` fed by the emulator: a ServiceEntry created in the API marks its hosts.
"""

from __future__ import annotations

import pytest
from lazyload_accesslog_ingest import edges, indexing, testing
from lazyload_accesslog_ingest.records import AccessRecord, ServiceRef

M = testing.SampleMesh
OPTIONS = edges.Options(cluster_domain="cluster.local")


def entry_index(*entries: tuple[str, str, list[str]]) -> indexing.ServiceIndex:
    index = indexing.ServiceIndex()
    for namespace, name, hosts in entries:
        index.apply_service_entry("ADDED", testing.service_entry(namespace, name, hosts))
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
    index.apply_service_entry("MODIFIED", testing.service_entry("a", "se", ["two.example.com"]))
    assert index.service_entry_for("one.example.com") is None
    assert index.service_entry_for("x.wild.example.com") is None
    assert index.service_entry_for("two.example.com") == ServiceRef("a", "se")
    index.apply_service_entry("DELETED", testing.service_entry("a", "se", []))
    assert index.service_entry_for("two.example.com") is None


def _edge(authority: str, index: indexing.ServiceIndex | None = None) -> object:
    rec = AccessRecord(protocol="http", caller_ip=M.PRODUCTPAGE_IP, authority=authority)
    result = edges.derive(rec, None, index or testing.sample_index(), OPTIONS, now=1.0)
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
    assert edge.external is True  # type: ignore[attr-defined]
    assert edge.destination_namespace == namespace  # type: ignore[attr-defined]
    assert edge.destination_service is None  # type: ignore[attr-defined]


def test_services_win_over_service_entries() -> None:
    index = testing.sample_index()
    index.apply_service_entry(
        "ADDED", testing.service_entry("egress", "greedy", ["*.default", "*.cluster.local"])
    )
    edge = _edge("details.default:9080", index)
    assert edge.external is False  # type: ignore[attr-defined]
    assert edge.destination_service == "details"  # type: ignore[attr-defined]
