"""The pure parts of `explain`, `graph` and `events` (no stack needed).

Covers: a host as the user types it becomes the host a fence holds (`details`, `details:9080`,
`details.default` -> the Service FQDN; an FQDN and an external host stay); `-n` keeps a namespace's
services and the nodes at the other end of their edges; dot and mermaid name every node and edge
with its reasons and quote what needs quoting; the subjects `events watch` subscribes to per kind
and namespace; a fence, a sidecar and a dead-letter event each read as one line.
"""

from __future__ import annotations

from lazyload_cli import events, explain, graph, status
from lazyload_common import events as models

GRAPH = {
    "nodes": [
        {"id": "default/productpage", "kind": "service", "fenced": True},
        {"id": "default/details", "kind": "service", "fenced": True},
        {"id": "shop/cart", "kind": "service", "fenced": True},
        {"id": "shop/pay", "kind": "service", "fenced": False},
        {"id": 'api."x".io', "kind": "external", "fenced": False},
    ],
    "edges": [
        {
            "source": "default/productpage",
            "target": "default/details",
            "host": "d",
            "reasons": ["learned"],
        },
        {"source": "shop/cart", "target": "shop/pay", "host": "p", "reasons": ["spec"]},
        {"source": "shop/cart", "target": 'api."x".io', "host": "a", "reasons": []},
    ],
}


def test_hosts_are_completed_as_a_fence_holds_them() -> None:
    fqdn = "details.default.svc.cluster.local"
    assert explain.fqdn("details", "default") == fqdn
    assert explain.fqdn("Details:9080", "default") == fqdn
    assert explain.fqdn("details.default", "other") == fqdn
    assert explain.fqdn("details.default.svc", "other") == fqdn
    assert explain.fqdn(fqdn + ".", "other") == fqdn
    assert explain.fqdn("www.example.com:443", "default") == "www.example.com"


def test_namespace_filter_keeps_the_other_ends() -> None:
    shop = graph.only_namespace(GRAPH, "shop")
    assert [n["id"] for n in shop["nodes"]] == ["shop/cart", "shop/pay", 'api."x".io']
    assert len(shop["edges"]) == 2
    assert graph.only_namespace(GRAPH, None) is GRAPH
    assert graph.only_namespace(GRAPH, "nowhere") == {"nodes": [], "edges": []}


def test_dot_and_mermaid() -> None:
    dot = graph.to_dot(GRAPH)
    assert '"shop/cart" -> "api.\\"x\\".io" [label=""];' in dot
    assert '"default/productpage" -> "default/details" [label="learned"];' in dot
    assert (
        '"shop/pay" [shape=box];' in dot and '"shop/cart" [shape=box, style="rounded,bold"];' in dot
    )
    mermaid = graph.to_mermaid(GRAPH).splitlines()
    assert mermaid[0] == "flowchart LR"
    assert '  n4(["api.#quot;x#quot;.io"])' in mermaid
    assert "  n0 -->|learned| n1" in mermaid and "  n2 --> n4" in mermaid


def test_watch_subjects() -> None:
    assert events.subjects_of(["fence", "sidecar"], None) == [
        "lazyload.fence.>",
        "lazyload.sidecar.>",
    ]
    assert events.subjects_of(["fence", "dlq"], "my.ns") == [
        "lazyload.fence.my_ns.>",
        "lazyload.dlq.>",
    ]


def test_event_lines() -> None:
    fence = models.FenceChanged(
        namespace="default",
        name="reviews",
        revision=3,
        hosts=["a"],
        added=["a"],
        removed=["b"],
        changed_at=0.0,
    )
    assert (
        events.line(fence, "s")
        == "1970-01-01T00:00:00Z fence   default/reviews rev 3 enabled, 1 hosts: +a -b"
    )
    sidecar = models.SidecarApplied(
        namespace="default",
        name="reviews",
        revision=3,
        action="conflict",
        message="not ours",
        applied_at=60.0,
    )
    assert events.line(sidecar, "s").endswith("rev 3 conflict, 0 egress hosts: not ours")
    letter = models.DeadLetter(
        service="fence-reconciler",
        reason="rejected: invalid host",
        at=0.0,
        subject="lazyload.deps.default.x",
        payload=b"\x00",
    )
    assert events.line(letter, "s").endswith(
        "dlq     fence-reconciler: rejected: invalid host (from lazyload.deps.default.x)"
    )
    assert '"payload"' not in events.as_json(letter, "lazyload.dlq.fence-reconciler")


def test_windowed_sli_matches_the_first_sidecar_at_or_after_the_revision() -> None:
    fence = models.FenceChanged(
        namespace="default", name="p", revision=2, first_seen={"a": 100.0, "b": 101.0}
    )
    older = models.FenceChanged(namespace="default", name="q", revision=5, first_seen={"c": 50.0})
    sidecars = [
        models.SidecarApplied(
            namespace="default", name="p", revision=1, action="applied", applied_at=90.0
        ),
        models.SidecarApplied(
            namespace="default", name="p", revision=3, action="applied", applied_at=104.0
        ),
        models.SidecarApplied(
            namespace="default", name="p", revision=4, action="applied", applied_at=110.0
        ),
        models.SidecarApplied(
            namespace="default", name="q", revision=5, action="conflict", applied_at=51.0
        ),
    ]
    sli = status._windowed_sli([fence, older], sidecars)
    assert sli["count"] == 2 and sli["mean_seconds"] == 3.5
    assert (sli["p50_seconds_at_most"], sli["p99_seconds_at_most"]) == (3.0, 4.0)
    assert status._windowed_sli([older], sidecars)["count"] == 0
