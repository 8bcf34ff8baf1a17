"""Recent rejections that name a caller (`rejections`), on the admin API of a running ingest.

Covers: an unroutable request (NR) and an IP authority that is no ClusterIP, from productpage's
address, are served by `GET /api/v1/rejections?namespace=default&name=productpage` with the
reason, the caller and the host (port cut off); a repeat of an entry key is not noted twice; an
unknown caller address is kept with no caller; the record is an LRU of bounded size.
"""

from __future__ import annotations

import httpx
from lazyload_accesslog_ingest import rejections
from lazyload_accesslog_ingest.records import Rejection
from lazyload_testing import ingest as t


async def test_rejections_name_their_caller(start_ingest) -> None:
    ingest = await start_ingest()
    async with t.AlsClient(ingest.target) as client:
        await client.send(
            t.message(
                t.http_entry("nowhere:9080", flags=["NR"], code=404),
                t.http_entry("10.5.5.5:80"),
                t.http_entry("details:9080", caller="10.9.9.9", flags=["NR"], code=404),
                t.http_entry("details:9080"),
                ident=t.identifier(),
            )
        )
    url = f"{ingest.admin_url}/api/v1/rejections"
    async with httpx.AsyncClient() as http:

        async def three() -> bool:
            return len((await http.get(url)).json()["items"]) >= 3

        await t.eventually(three, what="three rejections kept")
        mine = (await http.get(url, params={"namespace": "default", "name": "productpage"})).json()
        everything = (await http.get(url)).json()["items"]
    got = {(i["reason"], i["host"], tuple(i["callers"])) for i in mine["items"]}
    assert got == {
        ("unrouted", "nowhere", ("default/productpage",)),
        ("ip_authority", "10.5.5.5", ("default/productpage",)),
    }
    stranger = [i for i in everything if i["caller_ip"] == "10.9.9.9"]
    assert [(i["reason"], i["callers"]) for i in stranger] == [("unrouted", [])]


def test_the_record_is_an_lru() -> None:
    recent = rejections.RecentRejections(size=2, clock=lambda: 0.0)
    recent.note(Rejection.UNROUTED, ("default/a",), "10.0.0.1", "x")
    recent.note(Rejection.INVALID_HOST, ("default/a",), "10.0.0.1", "y")
    recent.note(Rejection.UNROUTED, ("default/a",), "10.0.0.1", "x")  # counted, moved to the end
    recent.note(Rejection.IP_AUTHORITY, ("default/b",), "10.0.0.2", "z")
    assert [(e.host, e.count) for e in recent.of()] == [("x", 2), ("z", 1)]
    assert [e.host for e in recent.of("default/b")] == ["z"]
