"""Auto-fencing by labels and the life of auto-created fences (emulator and nats-server).

Covers: a Service labelled `slime.io/serviceFenced: "true"` gets its fence before any traffic;
a Namespace label does the same for its Services, and a Service's "false" wins over it; `eager`
fences every Service at once; a deleted Service takes its auto-created fence with it (a deleted
event follows) but never a manual one; relabelling a Service "false" removes its auto fence.
"""

from __future__ import annotations

import contextlib
import time

import pytest
from lazyload_common import errors, kube, subjects
from lazyload_fence_reconciler import applying
from lazyload_testing.kube import faster_than, service_fence

L = "slime.io/serviceFenced"
PATH = "/apis/microservice.slime.io/v1alpha1/namespaces/{ns}/servicefences"


def _create_namespace(kit, name: str, labels: dict[str, str]) -> None:
    kit.api.create("/api/v1/namespaces", {"metadata": {"name": name, "labels": labels}})


async def test_service_label_fences_before_traffic(reconciler, kit) -> None:
    kit.create_service("reviews", labels={L: "true"})
    kit.create_service("ratings")
    async with kit.events(subjects.fence("default", "reviews")) as seen:
        await reconciler.start()
        event = await seen.until(lambda e: e.revision == 1)
    assert event.hosts == [] and event.workload_selector == {"app": "reviews"}
    assert kit.fence("ratings") is None


async def test_namespace_label_and_service_opt_out(reconciler, kit) -> None:
    _create_namespace(kit, "shop", {L: "true"})
    kit.create_service("cart", ns="shop")
    kit.create_service("legacy", ns="shop", labels={L: "false"})
    await reconciler.start()
    await kit.eventually(lambda: kit.fence("cart", ns="shop"))
    assert kit.fence("legacy", ns="shop") is None


async def test_eager_fences_every_service(reconciler, kit) -> None:
    kit.create_service("a")
    kit.create_service("b")
    kit.create_service("headless-ish", selector={})
    await reconciler.start(eager=True)
    await kit.eventually(lambda: kit.fence("a") and kit.fence("b"))
    kit.create_service("c")
    await kit.eventually(lambda: kit.fence("c"))
    assert kit.fence("headless-ish") is None


async def test_deleted_service_takes_its_auto_fence(reconciler, kit) -> None:
    kit.create_service("productpage")
    kit.create_service("manual")
    await reconciler.start()
    kit.api.create(
        PATH.format(ns="default"),
        service_fence("manual"),
    )
    async with kit.events() as seen:
        await kit.publish(kit.edge("details.default.svc.cluster.local"))
        await seen.until(lambda e: e.name == "productpage")
        kit.api.delete("/api/v1/namespaces/default/services/productpage")
        kit.api.delete("/api/v1/namespaces/default/services/manual")
        event = await seen.until(lambda e: e.name == "productpage" and e.deleted)
    assert event.removed == ["details.default.svc.cluster.local"]
    assert kit.fence("productpage") is None and kit.fence("manual") is not None


async def test_relabelled_false_removes_auto_fence(reconciler, kit) -> None:
    kit.create_service("reviews", labels={L: "true"})
    await reconciler.start()
    await kit.eventually(lambda: kit.fence("reviews"))
    service = kit.api.get("/api/v1/namespaces/default/services/reviews")
    service["metadata"]["labels"] = {L: "false"}
    kit.api.replace("/api/v1/namespaces/default/services/reviews", service)
    await kit.eventually(lambda: kit.fence("reviews") is None)


async def test_management_selectors_scope_auto_fences(reconciler, kit) -> None:
    _create_namespace(kit, "managed", {"team": "mesh"})
    _create_namespace(kit, "unmanaged", {"team": "other"})
    for ns in ("managed", "unmanaged"):
        kit.create_service("cart", ns=ns)
    await reconciler.start(eager=True, management_selectors=[{"matchLabels": {"team": "mesh"}}])
    await kit.eventually(lambda: kit.fence("cart", ns="managed"))
    edge = kit.edge("pay.example.com", ns="unmanaged", name="cart")
    async with kit.events(subjects.fence("managed", "cart")) as seen:
        await kit.publish(edge, kit.edge("pay.example.com", ns="managed", name="cart"))
        await seen.until(lambda e: "pay.example.com" in e.hosts)
    assert kit.fence("cart", ns="unmanaged") is None


async def test_by_default_every_service_is_fenced_before_any_traffic(reconciler, kit) -> None:
    """The default settings (Slime's autoFence): a cold start with Services and none of their
    fences makes every fence (and its FenceChanged, from which the writer makes the base Sidecar)
    without a single dependency, paced by the client rate limit, with progress in the metrics;
    a Service that appears later is fenced within seconds."""
    from lazyload_fence_reconciler import metrics
    from lazyload_fence_reconciler.settings import FenceSettings

    names = [f"svc-{i}" for i in range(12)]
    for name in names:
        kit.create_service(name)
    fenced = metrics.AUTO_FENCED._value.get()
    defaults = FenceSettings().model_dump()
    reconciler.settings = reconciler.settings.model_copy(
        update={"fence": FenceSettings(**{**defaults, "resync_interval": 0})}
    )
    assert reconciler.settings.fence.eager
    async with kit.events() as seen:
        await reconciler.start()
        for name in names:
            event = await seen.until(lambda e, name=name: e.name == name)
            assert event.hosts == [] and event.workload_selector == {"app": name}
        assert metrics.AUTO_FENCED._value.get() == fenced + len(names)
        assert metrics.AUTO_FENCE_PENDING._value.get() == 0
        started = time.monotonic()
        kit.create_service("late")
        await seen.until(lambda e: e.name == "late")
        assert time.monotonic() - started < 5


async def test_a_fence_is_deleted_only_as_it_was_read(kube_api, kube_server) -> None:
    """The delete of an auto-fence carries uid and resourceVersion preconditions: a fence
    changed since it was read (a user just made it theirs) is not deleted (#19)."""
    applier = applying.Applier(kube.AsyncKube(kube_server.api_client()))
    read = await applier.create("default", "productpage")
    current = await applier.get("default", "productpage")
    assert current is not None
    current["metadata"].setdefault("labels", {})["owner"] = "me"
    kube_api.replace(f"{PATH.format(ns='default')}/productpage", current)
    with pytest.raises(errors.TemporaryError):
        await applier.delete(read)
    assert await applier.get("default", "productpage") is not None
    now = await applier.get("default", "productpage")
    assert now is not None
    await applier.delete(now)  # as read now: deleted
    assert await applier.get("default", "productpage") is None


async def test_system_istio_and_lazyload_namespaces_are_never_fenced(reconciler, kit) -> None:
    """The global-sidecar must keep the whole mesh: lazyload's namespace (and istiod's, and
    Kubernetes' own) never get a fence, whatever deny_namespaces says."""
    for ns in ("mesh-operator", "istio-system"):
        with contextlib.suppress(kube.KubeConflict):
            kit.api.create("/api/v1/namespaces", {"metadata": {"name": ns}})
    kit.create_service("global-sidecar", ns="mesh-operator")
    kit.create_service("istiod", ns="istio-system")
    kit.create_service("a")
    await reconciler.start(eager=True)
    await kit.eventually(lambda: kit.fence("a"))
    assert kit.fence("global-sidecar", ns="mesh-operator") is None
    assert kit.fence("istiod", ns="istio-system") is None


async def test_every_api_request_keeps_to_the_client_rate_limit(
    reconciler, kit, kube_emulator
) -> None:
    """LAZYLOAD_KUBE__QPS/BURST bound every request of the reconciler - its lists and watches,
    the eager fences' creates and status writes - not only the writes (#18). (The fences are
    awaited on NATS: only the reconciler talks to the API meanwhile.)"""
    qps, burst, names = 10.0, 2, {"a", "b", "c", "d", "e", "f"}
    for name in sorted(names):
        kit.create_service(name)
    reconciler.settings = reconciler.settings.model_copy(
        update={"kube": reconciler.settings.kube.model_copy(update={"qps": qps, "burst": burst})}
    )
    kube_emulator.clear_requests()
    async with kit.events() as seen:
        await reconciler.start(eager=True)
        await seen.until(lambda _: {e.name for e in seen.seen} >= names, timeout=20)
    requests = kube_emulator.requests()
    assert len(requests) >= 20 and len(kube_emulator.writes(PATH.format(ns="default"))) >= 6
    assert not faster_than([r.time for r in requests], qps, burst)
