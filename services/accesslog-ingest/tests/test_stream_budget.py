"""`grpc.max_streams` bounds the open streams of both ALS ports together (`OpenStreams`): the
memory check of the settings (max_streams x max_message_bytes) assumes one budget, so a stream
held on the ALS port takes the mesh port's last slot too, and closing it frees the slot for either.
Against the service's real gRPC servers and a real client.
"""

from __future__ import annotations

import contextlib

import grpc
import pytest
from lazyload_testing import ingest as t


async def _status(target: str) -> grpc.StatusCode:
    """The status a new stream on `target` ends with (it sends one entry and no identity
    header, so the mesh port refuses it as unauthenticated when it has a slot for it)."""
    async with t.AlsClient(target) as client:
        stream = client.open()
        with contextlib.suppress(grpc.aio.AioRpcError):
            await stream.send(t.message(t.http_entry("reviews:9080"), ident=t.identifier()))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stream.call
        return caught.value.code()


async def test_the_ports_share_max_streams(start_ingest) -> None:
    ingest = await start_ingest(grpc={"max_streams": 1, "mesh_port": 0})
    mesh_target = f"127.0.0.1:{ingest.ports.mesh_grpc}"
    refused = t.metric_value("lazyload_ingest_streams_refused_total")
    async with t.AlsClient(ingest.target) as client:
        held = client.open()
        await held.send(t.message(t.http_entry("details:9080"), ident=t.identifier()))
        await t.eventually(lambda: t.metric_value("lazyload_ingest_streams") >= 1)
        assert await _status(mesh_target) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert t.metric_value("lazyload_ingest_streams_refused_total") == refused + 1
        await held.close()
    await t.eventually(lambda: t.metric_value("lazyload_ingest_streams") == 0)
    assert await _status(mesh_target) == grpc.StatusCode.UNAUTHENTICATED
    assert t.metric_value("lazyload_ingest_streams_refused_total") == refused + 1
