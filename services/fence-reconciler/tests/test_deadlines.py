"""A `deadline` spec host leaves the fence at its deadline, not at the next resync (which is off
here: `resync_interval=0`)."""

from __future__ import annotations

import time

FENCES = "/apis/microservice.slime.io/v1alpha1/namespaces/default/servicefences"


async def test_deadline_host_leaves_at_its_deadline(reconciler, kit) -> None:
    kit.create_service("productpage")
    expire = int(time.time()) + 3
    kit.api.create(
        FENCES,
        {
            "apiVersion": "microservice.slime.io/v1alpha1",
            "kind": "ServiceFence",
            "metadata": {"name": "productpage", "namespace": "default"},
            "spec": {
                "enable": True,
                "workloadSelector": {"fromService": True},
                "host": {
                    "leaving.example.com": {"deadline": {"expire": {"seconds": expire}}},
                    "staying.example.com": {"stable": {}},
                },
            },
        },
    )
    async with kit.events() as events:
        await reconciler.start()
        first = await events.until(lambda e: "leaving.example.com" in e.hosts)
        assert "staying.example.com" in first.hosts
        gone = await events.until(
            lambda e: e.revision > first.revision and "leaving.example.com" not in e.hosts,
            timeout=15,
        )
    late = time.time() - expire
    assert 0 <= late < 3, f"removed {late:.1f}s after its deadline"
    assert "leaving.example.com" in gone.removed
    status = kit.fence("productpage")["status"]
    assert status["domains"]["leaving.example.com"]["status"] == "EXPIRE"
