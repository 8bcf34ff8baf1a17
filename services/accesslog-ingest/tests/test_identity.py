"""The caller behind the global-sidecar's own istio-proxy (`identity`), through both decoders.

In the mesh the global-sidecar receives first calls from its pod's inbound proxy (127.0.0.6):
the caller is the `lazyload-source-ip` its own sidecar set, believed only within the namespace
that the last `x-forwarded-client-cert` element (the proxy's own) proves. Each case below is an
attack or a mistake that must not teach an edge; a direct caller ignores both headers.
"""

from __future__ import annotations

import pytest
from envoy.data.accesslog.v3 import accesslog_pb2
from lazyload_accesslog_ingest import edges, identity, parsing
from lazyload_accesslog_ingest.records import Rejection
from lazyload_testing import ingest as t

M = t.SampleMesh
INDEX = t.sample_index()
OPTIONS = edges.Options(cluster_domain="cluster.local", reporter="r1")
PROXY = "127.0.0.6"
BY = "By=spiffe://cluster.local/ns/mesh-operator/sa/global-sidecar;Hash=ab12"


def xfcc(namespace: str, sa: str = "productpage") -> str:
    return f'{BY};Subject="";URI=spiffe://cluster.local/ns/{namespace}/sa/{sa};DNS=x.{namespace}'


def entry(caller: str, **headers: str) -> accesslog_pb2.HTTPAccessLogEntry:
    return t.http_entry("details:9080", caller=caller, headers=headers)


def learned(caller: str, **headers: str) -> list[tuple[str, str, str]] | Rejection:
    """The (caller namespace, name, destination) edges of one entry, or its rejection, from
    the protobuf record and from the hot path's key (compiled and protobuf), which must agree."""
    e = entry(caller, **headers)
    results: list[list[tuple[str, str, str]] | Rejection] = []
    keyed = parsing.http_record_of(parsing.http_key(e))
    for record in (parsing.http_record(e), keyed):
        if isinstance(record, Rejection):
            results.append(record)
            continue
        derived = edges.derive(record, None, INDEX, OPTIONS, now=1_800_000_000.0)
        results.append(
            derived
            if isinstance(derived, Rejection)
            else [(d.source_namespace, d.source_name, d.destination_host) for d in derived]
        )
    if parsing.COMPILED:
        raw = t.message(e).SerializeToString()
        (key,) = parsing.DECODERS["compiled"](raw).group(False).firsts
        assert key == parsing.http_key(e)
    assert results[0] == results[1]
    return results[0]


def test_the_proven_caller_behind_the_proxy_is_learned() -> None:
    assert learned(
        PROXY,
        **{"lazyload-source-ip": M.PRODUCTPAGE_IP, "x-forwarded-client-cert": xfcc("default")},
    ) == [("default", "productpage", "details.default.svc.cluster.local")]


def test_a_client_sent_certificate_element_before_the_proxy_s_own_is_ignored() -> None:
    forged = f"{xfcc('default')},{xfcc('shop')}"  # the proxy appended the last one: shop
    assert (
        learned(
            PROXY, **{"lazyload-source-ip": M.PRODUCTPAGE_IP, "x-forwarded-client-cert": forged}
        )
        is Rejection.UNPROVEN_CALLER
    )


@pytest.mark.parametrize(
    "headers",
    [
        {"lazyload-source-ip": M.PRODUCTPAGE_IP},  # no certificate: plaintext reached the proxy
        {"x-forwarded-client-cert": xfcc("default")},  # no address
        {"lazyload-source-ip": "127.0.0.1", "x-forwarded-client-cert": xfcc("default")},
        {"lazyload-source-ip": "productpage", "x-forwarded-client-cert": xfcc("default")},
        {"lazyload-source-ip": M.PRODUCTPAGE_IP, "x-forwarded-client-cert": "By=x;Hash=y"},
        {
            "lazyload-source-ip": M.PRODUCTPAGE_IP,
            "x-forwarded-client-cert": f"{BY};URI=spiffe://cluster.local/ns/Not_A_Ns/sa/x",
        },
        {
            "lazyload-source-ip": M.PRODUCTPAGE_IP,
            "x-forwarded-client-cert": "URI=" + "a" * identity.MAX_CLIENT_CERT,
        },
        # a pod of `shop` claiming productpage's address in `default`
        {"lazyload-source-ip": M.PRODUCTPAGE_IP, "x-forwarded-client-cert": xfcc("shop")},
    ],
)
def test_a_proxied_entry_that_proves_no_caller_is_rejected(headers: dict[str, str]) -> None:
    assert learned(PROXY, **headers) is Rejection.UNPROVEN_CALLER


def test_a_direct_caller_ignores_the_headers() -> None:
    """Outside the mesh (no istio-proxy in front) the connection's address is the caller."""
    claimed = {"lazyload-source-ip": M.REVIEWS_IP, "x-forwarded-client-cert": xfcc("shop")}
    assert learned(M.PRODUCTPAGE_IP, **claimed) == [
        ("default", "productpage", "details.default.svc.cluster.local")
    ]


def test_quoted_values_and_ipv6_loopback() -> None:
    quoted = f'{BY};Subject="CN=a,O=b;c";URI=spiffe://cluster.local/ns/default/sa/p'
    assert identity.certified_namespace(quoted) == "default"
    assert identity.proxied_caller("::6", M.PRODUCTPAGE_IP, quoted) == (
        M.PRODUCTPAGE_IP,
        "default",
    )
