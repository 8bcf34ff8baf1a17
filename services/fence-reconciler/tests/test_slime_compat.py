"""Compatibility with Slime's ServiceFence (CRD in deploy/crds, against the emulator).

Covers: a fence as Slime writes it (int domain status, RecentlyCalled, visitor, timestamps,
label selectors) validates unchanged; the reconciler takes over such a fence: its metricStatus
hosts are published, Slime's fields survive; a CRD document with the names, short name, status
subresource and printer columns the brief asks for.
"""

from __future__ import annotations

from pathlib import Path

import yaml

DETAILS = "details.default.svc.cluster.local"
PATH = "/apis/microservice.slime.io/v1alpha1/namespaces/default/servicefences"
CRD = Path(__file__).resolve().parents[3] / "deploy" / "crds" / "servicefence.yaml"

SLIME_FENCE = {
    "apiVersion": "microservice.slime.io/v1alpha1",
    "kind": "ServiceFence",
    "metadata": {"name": "productpage", "namespace": "default"},
    "spec": {
        "enable": True,
        "host": {
            "reviews.default.svc.cluster.local": {"stable": {}},
            "test/*": {},
            "old.example.com": {"deadline": {"expire": {"seconds": 1600000000, "nanos": 0}}},
            "a.example.com": {
                "auto": {"duration": {"seconds": 60}},
                "RecentlyCalled": {"seconds": 1600000000},
            },
        },
        "namespaceSelector": ["foo", "bar"],
        "labelSelector": [{"selector": {"project": "back"}}],
        "workloadSelector": {"labels": {"app": "productpage"}, "fromService": False},
    },
}
SLIME_STATUS = {
    "metricStatus": {f'{{destination_service="{DETAILS}"}}': "7"},
    "domains": {
        DETAILS: {"hosts": [DETAILS], "status": 0, "RecentlyCalled": {"seconds": 1600000000}},
        "gone.default.svc.cluster.local": {
            "hosts": ["gone.default.svc.cluster.local"],
            "status": 2,
        },
    },
    "visitor": {"x": True},
}


def test_crd_document() -> None:
    crd = yaml.safe_load(CRD.read_text())
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    spec = crd["spec"]
    assert spec["group"] == "microservice.slime.io" and spec["scope"] == "Namespaced"
    assert spec["names"]["shortNames"] == ["svf"] and spec["names"]["plural"] == "servicefences"
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert {"Enabled", "Hosts", "Age"} <= set(columns)


async def test_slime_fence_validates_and_is_taken_over(reconciler, kit) -> None:
    created = kit.api.create(PATH, SLIME_FENCE)
    assert created["spec"] == SLIME_FENCE["spec"]
    created["status"] = SLIME_STATUS
    written = kit.api.replace(f"{PATH}/productpage/status", created)
    assert written["status"] == SLIME_STATUS
    async with kit.events() as seen:
        await reconciler.start()
        event = await seen.until(lambda e: e.name == "productpage")
    assert event.revision == 1
    assert event.hosts == [DETAILS, "reviews.default.svc.cluster.local", "test/*"]
    assert event.workload_selector == {"app": "productpage"}
    assert event.reasons[DETAILS] == ["learned"]
    status = kit.fence("productpage")["status"]
    assert status["metricStatus"] == SLIME_STATUS["metricStatus"]
    assert status["visitor"] == {"x": True}
    assert status["domains"]["old.example.com"]["status"] == "EXPIRE"
    assert status["domains"]["a.example.com"]["status"] == "EXPIRE"
