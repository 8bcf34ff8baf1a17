"""The catch-all and `dispatches` on a real Envoy fed only by global-pilot.

Covers: with `passthrough_by_default`, an unknown host carrying `Slime-Orig-Dest` reaches that
address (and is logged), one without the header still gets 404 NR (no loop to the listener
itself), and without `passthrough_by_default` both get 404 NR; a known Service still wins over
the passthrough; a domain dispatch sends its hosts to a named cluster (over a Service's own
domain too); a regex dispatch on `:authority` sends matching hosts to the passthrough; a
`_GLOBAL_SIDECAR` dispatch renders nothing on the global-sidecar itself; Envoy NACKs nothing.
"""

from __future__ import annotations

import pytest
from lazyload_global_pilot import resources
from lazyload_global_pilot.dispatches import Dispatch

pytestmark = pytest.mark.envoy


async def test_unknown_host_goes_to_the_original_destination(
    sidecar, upstream_factory, make_service
):
    details, outside = upstream_factory("details"), upstream_factory("outside")
    sidecar.reconfigure(passthrough_by_default=True)
    sidecar.set_mesh(make_service("details", endpoints=(("127.0.0.1", details.port),)))
    orig = {"Slime-Orig-Dest": f"127.0.0.1:{outside.port}"}
    response = await sidecar.eventually("api.example.com", **orig)
    assert response.text == "outside api.example.com"
    # a known Service wins over the header
    known = await sidecar.eventually("details.default:9080", **orig)
    assert known.text.startswith("details")
    # without the header nothing is known about the destination: 404, no route
    missing = await sidecar.get("api.example.com")
    assert missing.status_code == 404
    entry = await sidecar.logged(
        lambda e: e.request.authority == "api.example.com" and e.response.response_code.value == 200
    )
    assert entry.request.request_headers["slime-orig-dest"] == f"127.0.0.1:{outside.port}"
    assert entry.common_properties.upstream_cluster == "PassthroughCluster"
    assert sidecar.xds.ads.stats.nacks == 0


async def test_without_passthrough_by_default_unknown_hosts_get_404(sidecar, upstream_factory):
    outside = upstream_factory("outside")
    sidecar.reconfigure(passthrough_by_default=False)
    sidecar.set_mesh()
    for headers in ({"Slime-Orig-Dest": f"127.0.0.1:{outside.port}"}, {}):
        response = await sidecar.get("api.example.com", **headers)
        assert response.status_code == 404
    flagged = await sidecar.logged(lambda e: e.common_properties.response_flags.no_route_found)
    assert flagged.response.response_code.value == 404


async def test_dispatches_by_domain_and_by_regex(sidecar, upstream_factory, make_service):
    details, egress, outside = (
        upstream_factory("details"),
        upstream_factory("egress"),
        upstream_factory("outside"),
    )
    egress_cluster = "outbound|8080||egress.gw.svc.cluster.local"
    sidecar.reconfigure(
        passthrough_by_default=False,
        dispatches=(
            Dispatch(
                name="to-egress",
                domains=("*.corp.example", "details.default:9080"),
                cluster=egress_cluster,
            ),
            Dispatch(name="bare-names", domainRegex=r"^[^.]+(:\d+)?$", cluster="_PASSTHROUGH"),
            Dispatch(name="learn", domains=("*.learn.example",), cluster="_GLOBAL_SIDECAR"),
        ),
    )
    sidecar.set_mesh(
        make_service("details", endpoints=(("127.0.0.1", details.port),)),
        make_service("egress", "gw", port=8080, endpoints=(("127.0.0.1", egress.port),)),
    )
    assert (await sidecar.eventually("git.corp.example")).text.startswith("egress")
    # the dispatch's exact domain wins over the Service's own
    assert (await sidecar.get("details.default:9080")).text.startswith("egress")
    assert (await sidecar.get("details.default.svc.cluster.local:9080")).text.startswith("details")
    orig = {"Slime-Orig-Dest": f"127.0.0.1:{outside.port}"}
    assert (await sidecar.get("nodots:7000", **orig)).text == "outside nodots:7000"
    # the regex does not match dotted names, and passthrough is off: 404
    assert (await sidecar.get("a.b.example", **orig)).status_code == 404
    assert (await sidecar.get("x.learn.example", **orig)).status_code == 404
    assert sidecar.xds.ads.stats.nacks == 0


async def test_original_destination_upstream_sends_every_call_where_the_caller_dialled(
    sidecar, upstream_factory, make_service
):
    """A global-sidecar with its own istio-proxy (`routing.upstream=original_destination`):
    even a known Service goes to `Slime-Orig-Dest` (the istio-proxy there routes it with the
    mesh's policy), a short name is rewritten to the FQDN of the caller's namespace, and a call
    without the header has nowhere to go."""
    details, dialled = upstream_factory("details"), upstream_factory("dialled")
    sidecar.reconfigure(upstream="original_destination")
    snapshot = sidecar.set_mesh(make_service("details", endpoints=(("127.0.0.1", details.port),)))
    assert not any(c.startswith("outbound|") for c in snapshot.resources[resources.CLUSTER]), (
        "no Service cluster: the istio-proxy resolves"
    )
    orig = {"Slime-Orig-Dest": f"127.0.0.1:{dialled.port}"}
    known = await sidecar.eventually("details.default:9080", **orig)
    assert known.text == "dialled details.default:9080"
    short = await sidecar.get("details:9080", **orig, **{"Slime-Source-Ns": "default"})
    assert short.text == "dialled details.default.svc.cluster.local"
    unknown = await sidecar.get("api.example.com", **orig)
    assert unknown.text == "dialled api.example.com"
    missing = await sidecar.get("details.default:9080")
    assert missing.status_code == 404
    entry = await sidecar.logged(lambda e: e.request.authority == "api.example.com")
    assert entry.common_properties.upstream_cluster == "PassthroughCluster"
    assert sidecar.xds.ads.stats.nacks == 0
