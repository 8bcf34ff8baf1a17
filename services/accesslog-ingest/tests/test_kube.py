"""The service fed by the Kubernetes API (`kube_cluster`: the real API server under `make test`,
or the emulator; reached through a kubeconfig).

- `app.run` without an injected index lists and watches Endpoints, EndpointSlices and
  Services, and becomes ready once they are listed;
- an access log from a pod address listed in Endpoints becomes an event;
- a pod added later (watch) and a Service's ClusterIP (IP authority) are picked up;
- a pod known only from an EndpointSlice is a caller too;
- an Istio ServiceEntry (networking.istio.io/v1) created in the API marks its hosts: the edge
  stays external but carries the ServiceEntry's namespace.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from lazyload_accesslog_ingest import app
from lazyload_accesslog_ingest.settings import GrpcSettings, IngestSettings, PublishSettings
from lazyload_common import kube
from lazyload_common.settings import AdminSettings, KubeSettings, NatsSettings
from lazyload_testing import ingest as t
from lazyload_testing import waiting
from lazyload_testing.kube import KubeEmulator, faster_than
from lazyload_testing.kube_real import RealKube
from lazyload_testing.nats import NatsServer
from nats.aio.client import Client as NATS


@pytest.fixture
def api(kube_cluster: RealKube | KubeEmulator) -> kube.KubeApi:
    return kube.KubeApi(kube_cluster.api_client())


def create(api: kube.KubeApi, path: str, body: dict[str, Any]) -> dict[str, Any]:
    return api.create(path, body)


@pytest.fixture
async def ingest(
    kube_cluster: RealKube | KubeEmulator, nats_server: NatsServer, api: kube.KubeApi
) -> AsyncIterator[tuple[app.BoundPorts, str]]:
    create(api, "/api/v1/namespaces", {"metadata": {"name": "shop"}})
    details = create(api, "/api/v1/namespaces/default/services", _service("default", "details"))
    create(api, "/api/v1/namespaces/default/services", _service("default", "productpage"))
    create(api, "/api/v1/namespaces/shop/services", _service("shop", "ratings"))
    create(
        api,
        "/api/v1/namespaces/default/endpoints",
        t.endpoints("default", "productpage", ["10.1.0.1"]),
    )
    settings = IngestSettings(
        nats=NatsSettings(url=nats_server.url),
        kube=KubeSettings(kubeconfig=kube_cluster.kubeconfig),
        admin=AdminSettings(host="127.0.0.1", port=0),
        grpc=GrpcSettings(host="127.0.0.1", port=0, shutdown_grace=0.2),
        publish=PublishSettings(drain_timeout=0.5),
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    bound: list[app.BoundPorts] = []
    task = asyncio.create_task(app.run(settings, stop=stop, ready=ready, on_bound=bound.append))
    try:
        await asyncio.wait_for(ready.wait(), 20)
        yield bound[0], details["spec"]["clusterIP"]
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


def _service(namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"namespace": namespace, "name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": 9080, "name": "http"}]},
    }


async def _hosts(observer: NATS) -> list[tuple[str, str]]:
    return sorted(
        (m.subject, m.event.destination_host) for m in await t.read_dependency_events(observer)
    )


async def test_index_from_the_kubernetes_api(
    ingest: tuple[app.BoundPorts, str], api: kube.KubeApi, observer: NATS
) -> None:
    ports, details_ip = ingest
    assert details_ip and details_ip != "None"
    target = f"127.0.0.1:{ports.grpc}"
    async with t.AlsClient(target) as client:
        await client.send(
            t.message(
                t.http_entry("details:9080"),
                t.http_entry(details_ip),
                t.http_entry("ratings.shop"),
                ident=t.identifier(),
            )
        )

        async def learned() -> bool:
            return len(await t.read_dependency_events(observer)) == 3

        await t.eventually(learned, what="edges of the listed pod")
        # a pod added later, through the watch
        create(
            api,
            "/api/v1/namespaces/shop/endpoints",
            t.endpoints("shop", "ratings", [], not_ready=["10.2.0.9"]),
        )
        create(
            api,
            "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices",
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                **t.endpoint_slice("shop", "ratings-abc", "ratings", ["10.2.0.10"]),
            },
        )

        async def watched() -> bool:
            await client.send(
                t.message(
                    t.http_entry("details.default:9080", caller="10.2.0.9"),
                    t.http_entry("details.default:9081", caller="10.2.0.10"),
                )
            )
            return len(await t.read_dependency_events(observer)) == 5

        await t.eventually(watched, what="edges of the watched pods")
    assert await _hosts(observer) == [
        ("lazyload.deps.default.productpage", "details.default.svc.cluster.local"),
        ("lazyload.deps.default.productpage", "details.default.svc.cluster.local"),
        ("lazyload.deps.default.productpage", "ratings.shop.svc.cluster.local"),
        ("lazyload.deps.shop.ratings", "details.default.svc.cluster.local"),
        ("lazyload.deps.shop.ratings", "details.default.svc.cluster.local"),
    ]


async def test_service_entries_from_the_kubernetes_api(
    ingest: tuple[app.BoundPorts, str], api: kube.KubeApi, observer: NATS
) -> None:
    ports, _ = ingest
    create(api, "/api/v1/namespaces", {"metadata": {"name": "egress"}})
    create(
        api,
        "/apis/networking.istio.io/v1/namespaces/egress/serviceentries",
        t.service_entry("egress", "payments", ["*.payments.example"]),
    )
    async with t.AlsClient(f"127.0.0.1:{ports.grpc}") as client:
        port = 1000

        async def marked() -> bool:
            nonlocal port
            port += 1  # a new edge each time, until the watch has delivered the ServiceEntry
            await client.send(t.message(t.http_entry(f"api.payments.example:{port}")))
            found = await t.read_dependency_events(observer)
            return any(m.event.destination_namespace == "egress" for m in found)

        await t.eventually(marked, what="the ServiceEntry host to be known")
    events = await t.read_dependency_events(observer)
    assert all(m.event.external and m.event.destination_service is None for m in events)


async def test_every_api_request_keeps_to_the_client_rate_limit(
    kube_emulator: KubeEmulator, nats_server: NatsServer
) -> None:
    """LAZYLOAD_KUBE__QPS/BURST bound ingest's requests too: the lists, discovery and watches of
    its four reflectors (#18)."""
    qps, burst = 10.0, 2
    settings = IngestSettings(
        nats=NatsSettings(url=nats_server.url),
        kube=KubeSettings(kubeconfig=kube_emulator.kubeconfig, qps=qps, burst=burst),
        admin=AdminSettings(host="127.0.0.1", port=0),
        grpc=GrpcSettings(host="127.0.0.1", port=0, shutdown_grace=0.2),
        publish=PublishSettings(drain_timeout=0.5),
    )
    kube_emulator.clear_requests()

    def watching_all() -> bool:  # the four kinds
        return sum("watch=true" in r.query for r in kube_emulator.requests()) >= 4

    await waiting.serve_until(app.run, settings, watching_all)
    requests = kube_emulator.requests()
    assert len(requests) >= 8
    assert not faster_than([r.time for r in requests], qps, burst)
