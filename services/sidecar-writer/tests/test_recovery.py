"""Lost JetStream state: the writer sets its consumer and the fence stream up again.

An operator deletes the writer's durable consumer, then the LAZYLOAD_FENCES stream: `fetch` failed
with a JetStream API error that ended the consumer task, and the writer stopped (exit code 0 for
its supervisor: #19). Now both are created again and fence events are applied as before.
"""

from __future__ import annotations

import asyncio

from lazyload_common import subjects
from lazyload_testing.kube import KubeEmulator
from lazyload_testing.kube_real import RealKube

from .conftest import make_fence
from .test_writer import _settings, running

A = ["a.default.svc.cluster.local"]
B = ["b.default.svc.cluster.local"]
C = ["c.default.svc.cluster.local"]


async def test_a_deleted_consumer_and_fence_stream_are_set_up_again(
    nats_url: str, kube_cluster: RealKube | KubeEmulator
) -> None:
    async with running(_settings(nats_url, kube_cluster), kube_cluster) as writer:
        await writer.publish(make_fence(revision=1, hosts=A))
        assert (await writer.report(lambda r: r.revision == 1)).action == "applied"
        await writer.js.delete_consumer(subjects.FENCES_STREAM, "sidecar-writer")
        await writer.publish(make_fence(revision=2, hosts=B))
        assert (await writer.report(lambda r: r.revision == 2)).action == "applied"
        await writer.js.delete_stream(subjects.FENCES_STREAM)
        async with asyncio.timeout(15):  # the writer creates stream and consumer again
            while True:
                try:
                    await writer.js.consumer_info(subjects.FENCES_STREAM, "sidecar-writer")
                    break
                except Exception:
                    await asyncio.sleep(0.05)
        await writer.publish(make_fence(revision=3, hosts=C))
        report = await writer.report(lambda r: r.revision == 3)
        assert report.action == "applied" and "*/" + C[0] in report.egress_hosts
        stored = await writer.get()
        assert stored is not None
        assert stored["metadata"]["annotations"]["lazyload.io/fence-revision"] == "3"
