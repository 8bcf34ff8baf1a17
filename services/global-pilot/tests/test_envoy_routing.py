"""A real Envoy, configured only by global-pilot, routes by Host and logs over ALS.

Covers: the FQDN with port reaches the Service's endpoint; the short name reaches it with
`Slime-Source-Ns` and (being unique) without it; an ambiguous short name follows the header;
unknown hosts get 404 with flag NR; a Service added later is reachable within a second; Envoy
accepts every resource (no NACK); the ALS entries reach the ALS server with the authority, the
logged headers and the log name.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

import pytest

pytestmark = pytest.mark.envoy

FQDN = "details.default.svc.cluster.local:9080"


async def test_fqdn_and_short_names_reach_the_endpoint(sidecar, upstream_factory, make_service):
    details = upstream_factory("details")
    sidecar.set_mesh(make_service("details", endpoints=(("127.0.0.1", details.port),)))
    for host, headers in [
        (FQDN, {}),
        ("details.default:9080", {}),
        ("details:9080", {"Slime-Source-Ns": "default"}),
        ("details:9080", {}),
    ]:
        response = await _eventually_ok(sidecar, host, headers=headers)
        assert response.text == f"details {host}"
    assert sidecar.xds.ads.stats.nacks == 0


async def test_ambiguous_short_name_follows_the_source_namespace(
    sidecar, upstream_factory, make_service
):
    a, b = upstream_factory("db-in-a"), upstream_factory("db-in-b")
    sidecar.set_mesh(
        make_service("db", "a", endpoints=(("127.0.0.1", a.port),)),
        make_service("db", "b", endpoints=(("127.0.0.1", b.port),)),
    )
    found = await _eventually_ok(sidecar, "db:9080", headers={"Slime-Source-Ns": "b"})
    assert found.text.startswith("db-in-b")
    assert (await sidecar.get("db:9080", **{"Slime-Source-Ns": "a"})).text.startswith("db-in-a")
    assert (await sidecar.get("db:9080")).status_code == 404


async def test_unknown_host_gets_404_no_route(sidecar, upstream_factory, make_service):
    details = upstream_factory("details")
    sidecar.set_mesh(make_service("details", endpoints=(("127.0.0.1", details.port),)))
    await _eventually_ok(sidecar, FQDN)
    for host in ("nowhere.default.svc.cluster.local:9080", "details:9999", "example.com"):
        assert (await sidecar.get(host)).status_code == 404
    stats = await sidecar.envoy.stats("no_route")
    assert any(v > 0 for k, v in stats.items() if k.endswith("no_route"))


async def test_service_added_later_is_reachable_within_a_second(
    sidecar, upstream_factory, make_service
):
    details, ratings = upstream_factory("details"), upstream_factory("ratings")
    first = make_service("details", endpoints=(("127.0.0.1", details.port),))
    sidecar.set_mesh(first)
    await _eventually_ok(sidecar, FQDN)
    assert (await sidecar.get("ratings.default:9080")).status_code == 404
    started = time.monotonic()
    sidecar.set_mesh(first, make_service("ratings", endpoints=(("127.0.0.1", ratings.port),)))
    response = await _eventually_ok(sidecar, "ratings.default:9080", within=1.0)
    assert response.text.startswith("ratings")
    assert time.monotonic() - started < 1.0
    assert sidecar.xds.ads.stats.nacks == 0


async def test_access_logs_reach_the_als_server(sidecar, upstream_factory, make_service):
    details = upstream_factory("details")
    sidecar.set_mesh(make_service("details", endpoints=(("127.0.0.1", details.port),)))
    await _eventually_ok(sidecar, FQDN)
    await sidecar.get(
        FQDN, **{"Slime-Source-Ns": "productpage-ns", "Slime-Orig-Dest": "10.0.0.9:9080"}
    )
    await sidecar.get("unknown.example:80")
    entry = await _eventually_logged(
        sidecar, lambda e: e.request.request_headers.get("slime-source-ns")
    )
    assert entry.request.authority == FQDN
    assert entry.request.request_headers["slime-source-ns"] == "productpage-ns"
    assert entry.request.request_headers["slime-orig-dest"] == "10.0.0.9:9080"
    assert entry.response.response_code.value == 200
    assert sidecar.als.log_names[0] == "lazyload-global-sidecar"
    missing = await _eventually_logged(
        sidecar, lambda e: e.request.authority == "unknown.example:80"
    )
    assert missing.response.response_code.value == 404
    assert missing.common_properties.response_flags.no_route_found


async def _eventually_ok(
    sidecar, host: str, *, within: float = 5.0, headers: Mapping[str, str] | None = None
):
    """Envoy applies pushed config asynchronously: retry until 200 or `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        response = await sidecar.get(host, **(headers or {}))
        if response.status_code == 200 or time.monotonic() > deadline:
            assert response.status_code == 200, (host, response.status_code, response.text)
            return response
        await asyncio.sleep(0.02)


async def _eventually_logged(sidecar, predicate, within: float = 5.0):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for entry in sidecar.als.entries:
            if predicate(entry):
                return entry
        await asyncio.sleep(0.05)
    raise AssertionError(f"no such ALS entry in {len(sidecar.als.entries)} entries")
