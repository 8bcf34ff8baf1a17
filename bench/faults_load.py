"""The steady load of `make faults` and what it is checked against.

- `Load`: new edges at a steady rate, as ALS entries into accesslog-ingest over real gRPC (the
  global-sidecar's path): every tick one stream with the tick's entries, the caller a Service's
  endpoint address, the authority a destination Service. An edge counts as sent once ingest
  answered its stream (it then holds it; Envoy gets no more). A stream that fails (ingest down)
  keeps its entries for the next tick, as the callers keep calling; `resend` calls some edges
  again (real traffic repeats), which is how an ingest that lost what it held learns it again.
- `SidecarTruth`: what the Sidecars hold, read through the API, against the edges sent.
- `ChangeCounter`: the successful Sidecar writes in the emulator's request log, and those that
  changed nothing (the emulator marks them `unchanged`): duplicate writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from typing import Any

import httpx

from bench.common import PollingThread, RequestLog
from bench.faults_stack import (
    DEST_NAMESPACE,
    NAMESPACE,
    FaultStack,
    caller_ip,
    caller_name,
    dest_fqdn,
    dest_name,
)

SIDECARS = f"/apis/networking.istio.io/v1/namespaces/{NAMESPACE}/sidecars"


class Load:
    """New edges at `rate` per second into ingest's ALS port; edge k is caller k % C -> destination
    k // C (every edge new until C x D)."""

    def __init__(self, stack: FaultStack, rate: float, *, tick: float = 0.25) -> None:
        self.stack = stack
        self.rate, self.tick = rate, tick
        self.sent_at: dict[int, float] = {}
        """edge -> when ingest first took it."""
        self.next_edge = 0
        self.pending: list[int] = []
        self.failed_streams = 0
        self.producing = True
        self._carry = 0.0

    def edge(self, k: int) -> tuple[str, str]:
        c = self.stack.callers
        return caller_name(k % c), dest_fqdn((k // c) % self.stack.destinations)

    def sent_between(self, start: float, end: float) -> list[int]:
        return [k for k, t in self.sent_at.items() if start <= t <= end]

    def resend(self, edges: list[int]) -> None:
        self.pending.extend(edges)

    async def run(self, stop: asyncio.Event) -> None:
        channel = self._channel()
        ident = _ident()
        try:
            while not stop.is_set():
                if self.producing:
                    self._carry += self.rate * self.tick
                    new = int(self._carry)
                    self._carry -= new
                    limit = self.stack.callers * self.stack.destinations
                    self.pending += range(self.next_edge, min(self.next_edge + new, limit))
                    self.next_edge = min(self.next_edge + new, limit)
                batch = self.pending[:1000]
                if batch:
                    try:
                        await self._send(channel, ident, batch)
                    except Exception:  # ingest down or restarting: the callers call again
                        self.failed_streams += 1
                        await channel.close()
                        channel = self._channel()
                    else:
                        now = time.time()
                        for k in batch:
                            self.sent_at.setdefault(k, now)
                        del self.pending[: len(batch)]
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.tick)
        finally:
            await channel.close()

    def _channel(self) -> Any:
        import grpc

        return grpc.aio.insecure_channel(f"127.0.0.1:{self.stack.als_port}")

    async def _send(self, channel: Any, ident: bytes, batch: list[int]) -> None:
        c, d, now = self.stack.callers, self.stack.destinations, time.time()
        await send_edges(channel, ident, [(k % c, (k // c) % d, f"{k:x}-{now}") for k in batch])


async def send_edges(channel: Any, ident: bytes, edges: list[tuple[int, int, str]]) -> None:
    """One ALS stream on `channel`: the identifier message `ident`, then one message with an
    HTTP entry, stamped now, per (caller i, destination j, x-request-id): `caller_ip(i)` calling
    destination j's Service on port 9080."""
    from envoy.service.accesslog.v3 import als_pb2
    from lazyload_accesslog_ingest import receiving
    from lazyload_testing import ingest as t

    now = time.time()
    entries = [
        t.http_entry(
            f"{dest_name(j)}.{DEST_NAMESPACE}:9080",
            caller=caller_ip(i),
            upstream_cluster=f"outbound|9080||{dest_fqdn(j)}",
            headers={"x-request-id": request_id},
            start=now,
        )
        for i, j, request_id in edges
    ]
    method = channel.stream_unary(
        receiving.METHOD_PATH,
        request_serializer=None,
        response_deserializer=als_pb2.StreamAccessLogsResponse.FromString,
    )
    call = method(timeout=5.0)
    await call.write(ident)
    await call.write(t.message(*entries).SerializeToString())
    await call.done_writing()
    await call


def _ident() -> bytes:
    from lazyload_testing import ingest as t

    return t.message(ident=t.identifier()).SerializeToString()


class SidecarTruth:
    """Reads the Sidecars of the load's namespace; compares them with the edges sent."""

    def __init__(self, stack: FaultStack, load: Load) -> None:
        self.url = stack.kube_api_url + SIDECARS
        self.load = load

    def hosts(self) -> dict[str, set[str]]:
        items = httpx.get(self.url, timeout=10).json().get("items", [])
        return {
            s["metadata"]["name"]: {
                h.split("/", 1)[-1] for e in s["spec"].get("egress", []) for h in e.get("hosts", [])
            }
            for s in items
        }

    def missing(self, edges: list[int]) -> list[int]:
        """The edges that no Sidecar holds (all of them when the API cannot be read)."""
        try:
            have = self.hosts()
        except (httpx.HTTPError, ValueError):
            return list(edges)
        out = []
        for k in edges:
            caller, host = self.load.edge(k)
            if host not in have.get(caller, set()):
                out.append(k)
        return out


class ChangeCounter(PollingThread):
    """The successful Sidecar writes of the load's namespace in the emulator's request log (polled
    every second; it dedups, so the ring cannot wrap under it), and those that changed nothing:
    the emulator marks an update that made no new resourceVersion `unchanged`."""

    def __init__(self, stack: FaultStack) -> None:
        self.requests = RequestLog(stack.kube_api_url)
        super().__init__("request-log", join_timeout=15)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            with contextlib.suppress(httpx.HTTPError, ValueError):
                self.requests.poll()

    def duplicates(self, start: float, end: float) -> tuple[int, int]:
        """(successful Sidecar writes, of them the ones that changed nothing) in [start, end]."""
        with contextlib.suppress(httpx.HTTPError, ValueError):
            self.requests.poll()
        writes = [
            r
            for r in list(self.requests.records.values())
            if start <= r["time"] <= end
            and r["status"] < 400
            and r["verb"].upper() in ("POST", "PUT", "PATCH")
            and "/sidecars" in r["path"]
            and f"/namespaces/{NAMESPACE}/" in r["path"]
        ]
        return len(writes), sum(1 for r in writes if r.get("unchanged"))


def per_caller(load: Load, edges: list[int]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for k in edges:
        out[load.edge(k)[0]] += 1
    return dict(out)
