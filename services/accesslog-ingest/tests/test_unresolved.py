"""Unknown callers published as `unresolved` edges (setting `edges.publish_unresolved`).

- off (the default): an unknown caller is an `unknown_caller` rejection, never guessed;
- on: one edge with `source_kind="unresolved"`, `source_name` = the caller IP, `source_namespace`
  = the `slime-source-ns` header when it is a valid namespace, else `unknown`; short names are
  completed only with a known namespace; a caller "address" that is no IP is still rejected;
- known callers are unchanged; through `app.run` the edge lands on `lazyload.deps.<ns>.<ip>`
  (dots escaped) and the unknown-caller counter still counts it.
"""

from __future__ import annotations

import pytest
from lazyload_accesslog_ingest import edges
from lazyload_accesslog_ingest.records import AccessRecord, Rejection
from lazyload_common import events
from lazyload_testing import ingest as t
from nats.aio.client import Client as NATS

M = t.SampleMesh
INDEX = t.sample_index()
ON = edges.Options(publish_unresolved=True)


BASE = AccessRecord(protocol="http", caller_ip="10.9.9.9", authority="x.com")


def derive(
    options: edges.Options = ON, **fields: object
) -> list[events.DependencyObserved] | Rejection:
    return edges.derive(BASE._replace(**fields), None, INDEX, options, now=1.0)


def derived(**fields: object) -> list[events.DependencyObserved]:
    """The edges of the record, which the test expects to make edges (not a rejection)."""
    found = derive(ON, **fields)
    assert isinstance(found, list), found
    return found


def test_off_by_default() -> None:
    assert derive(edges.Options()) is Rejection.UNKNOWN_CALLER


@pytest.mark.parametrize(
    ("header", "authority", "namespace", "host"),
    [
        ("", "www.example.com:443", "unknown", "www.example.com"),
        ("shop", "ratings", "shop", "ratings.shop.svc.cluster.local"),
        ("shop", "details.default", "shop", "details.default.svc.cluster.local"),
        ("not a namespace", "www.example.com", "unknown", "www.example.com"),
        ("x" * 64, "www.example.com", "unknown", "www.example.com"),
    ],
)
def test_unresolved_edge(header: str, authority: str, namespace: str, host: str) -> None:
    [edge] = derived(source_namespace_header=header, authority=authority)
    assert edge.source_kind == "unresolved"
    assert (edge.source_namespace, edge.source_name) == (namespace, "10.9.9.9")
    assert edge.destination_host == host


def test_short_name_without_namespace_is_rejected() -> None:
    assert derive(authority="details") is Rejection.UNKNOWN_CALLER


def test_caller_that_is_no_ip_is_rejected() -> None:
    assert derive(caller_ip="pod-a") is Rejection.UNKNOWN_CALLER


def test_ipv6_caller() -> None:
    [edge] = derived(caller_ip="fd00::9")
    assert edge.source_name == "fd00::9"


def test_known_callers_unchanged() -> None:
    [edge] = derived(caller_ip=M.PRODUCTPAGE_IP)
    assert (edge.source_kind, edge.source_name) == ("service", "productpage")


async def test_published_through_the_service(start_ingest, observer: NATS) -> None:
    ingest = await start_ingest(edges={"publish_unresolved": True})
    unknown = t.metric_value("lazyload_ingest_unknown_callers_total")
    async with t.AlsClient(ingest.target) as client:
        await client.send(
            t.message(
                t.http_entry("ratings", caller="10.9.9.9", headers={"slime-source-ns": "shop"}),
                t.http_entry("details:9080"),
                ident=t.identifier(),
            )
        )

    async def two() -> bool:
        return len(await t.read_dependency_events(observer)) == 2

    await t.eventually(two, what="the unresolved and the known edge")
    got = {m.subject: m.event for m in await t.read_dependency_events(observer)}
    edge = got["lazyload.deps.shop.10_9_9_9"]
    assert (edge.source_kind, edge.source_name) == ("unresolved", "10.9.9.9")
    assert edge.destination_host == "ratings.shop.svc.cluster.local"
    assert "lazyload.deps.default.productpage" in got
    assert t.metric_value("lazyload_ingest_unknown_callers_total") == unknown + 1
