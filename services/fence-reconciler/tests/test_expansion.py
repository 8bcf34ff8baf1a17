"""What a fence expands to (pure domain: `expanding` and `desiring`).

Covers: VirtualService destinations of http, tcp and tls routes and http mirrors join the domain
of their host with reason `expanded` and `from:<domain>`; short names are completed with the
VirtualService's namespace (Istio's rule); delegate VirtualServices; gateway-only VirtualServices
do not apply; `*.suffix` VirtualService hosts; `ns/*` expands with destinations of that
namespace's services that live elsewhere; an EXPIRE domain takes its expansion with it; label
selectors (AND inside, OR across, any namespace) give hosts with reason `selector`; domainAliases
(Go named groups, `$name`/`${name}`, exactly one match) with reason `alias`; bad alias settings
are refused; module-wide stable hosts (Slime's stableHost) join every fence; the expansion is a fixpoint and recorded reasons survive a read-back.
"""

from __future__ import annotations

import pytest
from lazyload_common import errors
from lazyload_fence_reconciler import desiring, expanding, fences
from lazyload_fence_reconciler.settings import DomainAlias, FenceSettings, ReconcilerSettings

NOW = 1_700_000_000.0
CD = "cluster.local"
REVIEWS = "reviews.default.svc.cluster.local"
V2 = "reviews-v2.default.svc.cluster.local"
V3 = "reviews-v3.other.svc.cluster.local"


def _vs(name: str, spec: dict[str, object], ns: str = "default") -> dict[str, object]:
    return {"metadata": {"namespace": ns, "name": name}, "spec": spec}


def _route(*dests: str) -> list[dict[str, object]]:
    return [{"route": [{"destination": {"host": d}} for d in dests]}]


def _fence(spec: dict[str, object], status: dict[str, object] | None = None) -> fences.Fence:
    return fences.Fence.from_raw(
        {
            "metadata": {"namespace": "default", "name": "productpage"},
            "spec": {"enable": True, **spec},
            "status": status or {},
        }
    )


def test_routes_of_every_kind_and_short_names() -> None:
    routes = expanding.routes_from_virtual_services(
        [
            _vs(
                "reviews",
                {
                    "hosts": ["reviews"],
                    "http": [
                        {
                            "route": [{"destination": {"host": "reviews-v2"}}],
                            "mirror": {"host": "m"},
                        }
                    ],
                    "tcp": _route("reviews-v3.other.svc.cluster.local"),
                    "tls": _route("t.example.com"),
                },
            ),
            _vs("gw", {"hosts": ["gw.example.com"], "gateways": ["ingress"], "http": _route("x")}),
        ],
        CD,
    )
    assert routes == {REVIEWS: frozenset({V2, V3, "t.example.com", "m.default.svc.cluster.local"})}


def test_delegate_virtual_service_destinations() -> None:
    routes = expanding.routes_from_virtual_services(
        [
            _vs("root", {"hosts": ["reviews"], "http": [{"delegate": {"name": "child"}}]}),
            _vs("child", {"http": _route("reviews-v3")}, ns="other"),
            _vs("child", {"http": _route("reviews-v2")}),
        ],
        CD,
    )
    assert routes == {REVIEWS: frozenset({V2})}
    routes = expanding.routes_from_virtual_services(
        [
            _vs(
                "root",
                {"hosts": ["reviews"], "http": [{"delegate": {"name": "c", "namespace": "other"}}]},
            ),
            _vs("c", {"http": _route("reviews-v3")}, ns="other"),
        ],
        CD,
    )
    assert routes == {REVIEWS: frozenset({V3})}


def test_fence_host_expands_with_reason() -> None:
    mesh = expanding.Mesh(routes={REVIEWS: frozenset({V2, V3}), "*.example.com": frozenset({V2})})
    desired = desiring.desire(
        _fence({"host": {REVIEWS: {}, "a.example.com": {}}}),
        service_selector=None,
        now=NOW,
        mesh=mesh,
    )
    assert desired.state.hosts == tuple(sorted(("a.example.com", V2, REVIEWS, V3)))
    assert desired.status["domains"][REVIEWS]["hosts"] == [REVIEWS, V2, V3]
    assert desired.state.reasons[V3] == ("expanded", f"from:{REVIEWS}")
    assert desired.state.reasons[V2] == ("expanded", "from:a.example.com", f"from:{REVIEWS}")
    assert desired.status["reasons"][V3] == ["expanded", f"from:{REVIEWS}"]
    written = fences.Fence.from_raw(
        {
            "metadata": {"namespace": "default", "name": "productpage"},
            "spec": {"enable": True, "host": {REVIEWS: {}, "a.example.com": {}}},
            "status": desired.status,
        }
    )
    assert desiring.recorded(written).reasons == desired.state.reasons
    again = desiring.desire(written, service_selector=None, now=NOW, mesh=mesh)
    assert not again.write_needed and not again.changed


def test_expired_domain_takes_its_expansion() -> None:
    mesh = expanding.Mesh(routes={REVIEWS: frozenset({V2})})
    deadline = {"deadline": {"expire": {"seconds": int(NOW) - 1}}}
    desired = desiring.desire(
        _fence({"host": {REVIEWS: deadline}}), service_selector=None, now=NOW, mesh=mesh
    )
    assert desired.state.hosts == ()


def test_namespace_domain_expands_with_outside_destinations() -> None:
    mesh = expanding.Mesh(
        routes={
            REVIEWS: frozenset({V2, V3}),
            "x.other.svc.cluster.local": frozenset({"y.third.svc.cluster.local"}),
        }
    )
    desired = desiring.desire(
        _fence({"host": {"default/*": {}}}), service_selector=None, now=NOW, mesh=mesh
    )
    assert desired.state.hosts == ("default/*", V3)
    assert desired.state.reasons[V3] == ("expanded", "from:default/*")


def test_label_selectors_and_within_or_across() -> None:
    mesh = expanding.Mesh(
        services=(
            ("a.default.svc.cluster.local", {"tier": "db", "team": "x"}),
            ("b.other.svc.cluster.local", {"tier": "db"}),
            ("c.other.svc.cluster.local", {"team": "y"}),
            ("d.default.svc.cluster.local", {}),
        )
    )
    fence = _fence(
        {"labelSelector": [{"selector": {"tier": "db", "team": "x"}}, {"selector": {"team": "y"}}]}
    )
    desired = desiring.desire(fence, service_selector=None, now=NOW, mesh=mesh)
    assert desired.state.hosts == ("a.default.svc.cluster.local", "c.other.svc.cluster.local")
    assert desired.state.reasons["a.default.svc.cluster.local"] == ("selector",)
    empty = _fence({"labelSelector": [{"selector": {}}]})
    assert desiring.desire(empty, service_selector=None, now=NOW, mesh=mesh).state.hosts == ()


def test_domain_aliases() -> None:
    rule = DomainAlias(
        pattern=r"(?<service>[^\.]+)\.(?P<namespace>[^\.]+)\.svc\.cluster\.local$",
        templates=["$namespace.$service.mailsaas", "${service}-alias.example.com"],
    ).compiled()
    assert rule.expand("details.default.svc.cluster.local") == [
        "default.details.mailsaas",
        "details-alias.example.com",
    ]
    assert rule.expand("www.example.com") == []
    mesh = expanding.Mesh(aliases=(rule,))
    edge = desiring.Edge("details.default.svc.cluster.local", 9080, NOW, NOW)
    desired = desiring.desire(_fence({}), [edge], service_selector=None, now=NOW, mesh=mesh)
    assert "default.details.mailsaas" in desired.state.hosts
    assert desired.state.reasons["default.details.mailsaas"] == (
        "alias",
        "from:details.default.svc.cluster.local",
    )


def test_bad_alias_is_refused() -> None:
    with pytest.raises(ValueError):
        DomainAlias(pattern="(", templates=["x"])
    with pytest.raises(ValueError):
        DomainAlias(pattern="x", templates=[])


def test_stable_hosts_join_every_fence() -> None:
    settings = FenceSettings(stable_hosts=["mesh-operator/*", "*/www.example.com", "api.io"])
    mesh = expanding.Mesh(stable_hosts=settings.stable_domains())
    desired = desiring.desire(_fence({}), service_selector=None, now=NOW, mesh=mesh)
    assert desired.state.hosts == ("api.io", "mesh-operator/*", "www.example.com")
    assert desired.state.reasons["api.io"] == ("stable",)
    with pytest.raises(errors.ConfigError):
        ReconcilerSettings(fence=FenceSettings(stable_hosts=["*/Bad_Host"])).check()
