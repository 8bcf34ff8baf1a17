"""Istio revisions (Slime's istioRev / strictRev / selfResourceRev), against nats-server and the
emulator: a reconciler of revision `canary` labels the fences it creates `istio.io/rev: canary`,
learns into its own and unlabelled fences, and leaves a fence of another revision alone (no write,
no event); with `strict_rev` an unlabelled fence is not its own either. Pure: the scope rule."""

from __future__ import annotations

import asyncio

import pytest
from lazyload_common import subjects
from lazyload_fence_reconciler import fences
from lazyload_testing.kube import service_fence

DETAILS = "details.default.svc.cluster.local"
REVIEWS = "reviews.default.svc.cluster.local"
FENCES = "/apis/microservice.slime.io/v1alpha1/namespaces/default/servicefences"


@pytest.mark.parametrize(
    ("label", "strict", "served"),
    [
        (None, False, True),
        ("canary", False, True),
        ("stable", False, False),
        (None, True, False),
        ("canary", True, True),
        ("stable", True, False),
    ],
)
def test_revision_scope(label: str | None, strict: bool, served: bool) -> None:
    labels = {fences.REVISION_LABEL: label} if label else {}
    assert fences.revision_in_scope(labels, "canary", strict=strict) is served


def test_no_revision_configured_serves_only_unlabelled_when_strict() -> None:
    assert fences.revision_in_scope({}, "", strict=True)
    assert not fences.revision_in_scope({fences.REVISION_LABEL: "canary"}, "", strict=True)
    assert not fences.revision_in_scope({fences.REVISION_LABEL: "canary"}, "", strict=False)


def _manual_fence(kit, name: str, rev: str | None) -> None:
    labels = {fences.REVISION_LABEL: rev} if rev else {}
    body = service_fence(name, labels=labels, workloadSelector={"fromService": True})
    kit.api.create(FENCES, body)


async def test_created_fences_carry_the_revision(reconciler, kit) -> None:
    kit.create_service("productpage")
    await reconciler.start(istio_rev="canary")
    async with kit.events(subjects.fence("default", "productpage")) as seen:
        await kit.publish(kit.edge(DETAILS))
        await seen.until(lambda e: DETAILS in e.hosts)
    fence = kit.fence("productpage")
    assert fence is not None
    assert fence["metadata"]["labels"][fences.REVISION_LABEL] == "canary"


async def test_a_fence_of_another_revision_is_left_alone(reconciler, kit) -> None:
    for name, rev in (("productpage", "stable"), ("reviews", None)):
        kit.create_service(name)
        _manual_fence(kit, name, rev)
    await reconciler.start(istio_rev="canary")
    async with kit.events() as seen:
        await kit.publish(kit.edge(DETAILS, name="productpage"), kit.edge(DETAILS, name="reviews"))
        await seen.until(lambda e: e.name == "reviews" and DETAILS in e.hosts)
        await asyncio.sleep(0.5)  # what productpage's edge would have caused has had its time
        await seen.drain()
    assert not [e for e in seen.seen if e.name == "productpage"]
    stable = kit.fence("productpage")
    assert stable is not None and "learned" not in (stable.get("status") or {})


async def test_strict_revision_leaves_unlabelled_fences_alone(reconciler, kit) -> None:
    for name, rev in (("productpage", None), ("reviews", "canary")):
        kit.create_service(name)
        _manual_fence(kit, name, rev)
    await reconciler.start(istio_rev="canary", strict_rev=True)
    async with kit.events() as seen:
        await kit.publish(kit.edge(REVIEWS, name="productpage"), kit.edge(DETAILS, name="reviews"))
        await seen.until(lambda e: e.name == "reviews" and DETAILS in e.hosts)
        await asyncio.sleep(0.5)
        await seen.drain()
    assert not [e for e in seen.seen if e.name == "productpage"]
    unlabelled = kit.fence("productpage")
    assert unlabelled is not None and "learned" not in (unlabelled.get("status") or {})
