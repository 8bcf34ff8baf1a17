"""Dependency events in: the batch handler on `lazyload_common.jetstream.consume`.

A batch is validated message by message (an invalid caller or host is rejected, i.e.
dead-lettered on `lazyload.dlq.fence-reconciler` by the consume loop), then grouped by caller
fence, and each fence is learned once for all its edges waiting: edges of later batches (the loop
keeps `pipeline` of them in hand) join a write that waits for its slot or its fence's window, so
a fence is written at most once per `coalesce_window` and a backlog costs one write per fence,
not one per edge.
Outcomes map onto the deliveries: success or a policy "ignore" -> ack (by the consume loop, after
this handler returned, so after the fence write and its event); a dispatched host or an
external host neither allowed nor a ServiceEntry (`admitting`) -> ack, counted; a Service not
known yet -> retry with delay, and dead-letter after `missing_service_retries` deliveries; a refused write ->
reject; anything else -> retry. This module never acks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from lazyload_common import errors, events, hosts, jetstream, subjects

from lazyload_fence_reconciler import admitting, deciding, desiring, metrics, reconciling
from lazyload_fence_reconciler.settings import SERVICE, FenceSettings

log = logging.getLogger(__name__)
DURABLE = "fence-reconciler"


def consumer_spec(settings: FenceSettings, *, stream_replicas: int = 1) -> jetstream.ConsumerSpec:
    return jetstream.ConsumerSpec(
        stream=subjects.DEPS_STREAM,
        durable=DURABLE,
        filter_subject=f"{subjects.DEPS_PREFIX}.>",
        service=SERVICE,
        model=events.DependencyObserved,
        batch=settings.batch,
        # Everything that arrives within the window is one batch, and one batch writes each fence
        # once: a burst of edges for a fence costs one ServiceFence write per window.
        linger=settings.coalesce_window,
        max_batch=settings.max_batch,
        pipeline=settings.pipeline,
        max_ack_pending=settings.pipeline * settings.max_batch,
        max_deliver=settings.max_deliver,
        stream_replicas=stream_replicas,
    )


def invalid_reason(event: events.DependencyObserved) -> str | None:
    """Why an edge can never be learned, or None when it is fine: every field the reconciler acts
    on is checked (the times by the event model already).

    A learned host is one host: a valid FQDN, never a whole namespace (`ns/*`) or a wildcard;
    namespaces only come from a fence's `spec`. An edge that names one would widen the caller's
    Sidecar to everything there (#16)."""
    if event.source_kind == "unresolved":
        return "unresolved caller"
    if not hosts.is_valid_namespace(event.source_namespace):
        return f"invalid caller namespace {event.source_namespace[:300]!r}"
    name = event.source_name
    if not (hosts.is_valid_namespace(name) or hosts.is_valid_host(name)):
        return f"invalid caller name {name[:300]!r}"
    if not hosts.is_valid_host(event.destination_host):
        return f"invalid host {event.destination_host[:300]!r}: not one lower-case FQDN"
    port = event.destination_port
    if port is not None and not 0 < port < 65536:
        return f"invalid port {port!r}"
    namespace = event.destination_namespace
    if namespace is not None and not hosts.is_valid_namespace(namespace):
        return f"invalid destination namespace {namespace[:300]!r}"
    service = event.destination_service
    if service is not None and not hosts.is_valid_namespace(service):  # a Service name: a label
        return f"invalid destination service {service[:300]!r}"
    return None


@dataclass
class _Waiting:
    """Edges (and their deliveries) waiting for the next write of one fence, across batches."""

    workload: str | None
    edges: list[desiring.Edge] = field(default_factory=list)
    deliveries: list[jetstream.Delivery] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)


class BatchHandler:
    """Groups a batch by fence and learns each group through the reconciler.

    Edges of a fence wait in one `_Waiting` until the fence's next write: while that fence is
    being written, or has been written less than `coalesce_window` ago, or all `concurrency` write
    slots are busy, the edges later batches bring for it join the same write (the consume loop
    keeps `pipeline` batches in hand). So a fence is written at most once per window, and a
    backlog of interleaved edges costs about one write per fence rather than one per edge.
    """

    def __init__(
        self,
        reconciler: reconciling.Reconciler,
        settings: FenceSettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.reconciler = reconciler
        self.settings = settings
        self.clock = clock
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._waiting: dict[reconciling.Key, _Waiting] = {}
        self._written: dict[reconciling.Key, float] = {}
        """When each fence was last written (for the window); pruned as windows pass."""

    async def __call__(self, batch: list[jetstream.Delivery]) -> None:
        groups: dict[reconciling.Key, list[jetstream.Delivery]] = defaultdict(list)
        workloads: dict[reconciling.Key, str] = {}
        identity = self.settings.workload_identity()
        for delivery in batch:
            event: events.DependencyObserved = delivery.event
            reason = invalid_reason(event)
            key = (event.source_namespace, event.source_name)
            if identity is not None and event.source_kind == "workload":
                key = (event.source_namespace, identity.fence_name(event.source_name))
                workloads[key] = event.source_name
            if reason is not None:
                _reject(delivery, reason)
                if _names_a_caller(event):
                    self._note(key, event.destination_host, deciding.REJECTED, reason)
                continue
            groups[key].append(delivery)
        self._prune()
        await asyncio.gather(
            *(self._submit(key, group, workloads.get(key)) for key, group in groups.items())
        )

    async def _submit(
        self, key: reconciling.Key, group: list[jetstream.Delivery], workload: str | None
    ) -> None:
        edges = []
        for d in group:
            edge = desiring.Edge(
                host=d.event.destination_host,
                port=d.event.destination_port,
                first_seen=d.event.first_seen,
                observed_at=d.event.observed_at,
                external=d.event.external,
                registered=d.event.destination_namespace is not None,
            )
            refused = self.reconciler.admit(edge)
            if refused is None:
                edges.append(edge)
            else:
                metrics.EDGES.labels(refused).inc()
                self._note(key, edge.host, deciding.DROPPED, _DROPS.get(refused, refused))
            d.slim()
        if not edges:
            return
        waiting = self._waiting.get(key)
        if waiting is not None:  # a write of this fence is already waiting: ride along
            waiting.edges += edges
            waiting.deliveries += group
            await waiting.done.wait()
            return
        waiting = self._waiting[key] = _Waiting(workload, edges, list(group))
        try:
            await self._write(key, waiting)
        finally:
            if self._waiting.get(key) is waiting:
                del self._waiting[key]
            waiting.done.set()

    async def _write(self, key: reconciling.Key, waiting: _Waiting) -> None:
        last = self._written.get(key)
        if last is not None:
            await asyncio.sleep(last + self.settings.coalesce_window - self.clock())
        async with self._slots:
            del self._waiting[key]  # edges that come from now on wait for the next write
            try:
                outcome = await self.reconciler.learn(key, waiting.edges, workload=waiting.workload)
            except reconciling.Waiting as e:
                self._wait(waiting.deliveries, e)
                self._note_all(key, waiting.edges, deciding.WAITING, str(e))
                return
            except errors.PermanentError as e:
                for d in waiting.deliveries:
                    _reject(d, str(e))
                self._note_all(key, waiting.edges, deciding.REJECTED, f"write refused: {e}")
                return
            except Exception as e:
                log.warning("learning %d edges of %s/%s failed: %s", len(waiting.edges), *key, e)
                delay = e.delay if isinstance(e, errors.TemporaryError) else 1.0
                for d in waiting.deliveries:
                    d.retry(str(e), delay=delay)
                metrics.EDGES.labels("failed").inc(len(waiting.deliveries))
                return
            finally:
                self._written[key] = self.clock()
        ignored = outcome.startswith("ignored")
        metrics.EDGES.labels("ignored" if ignored else "learned").inc(len(waiting.edges))
        if ignored:
            log.debug("edges of %s/%s %s", key[0], key[1], outcome)
            self._note_all(key, waiting.edges, deciding.IGNORED, outcome.removeprefix("ignored: "))

    def _note(self, key: reconciling.Key, host: str, outcome: str, reason: str) -> None:
        self.reconciler.decisions.note(key, host, outcome, reason)

    def _note_all(
        self, key: reconciling.Key, edges: list[desiring.Edge], outcome: str, reason: str
    ) -> None:
        for host in dict.fromkeys(e.host for e in edges):
            self._note(key, host, outcome, reason)

    def _prune(self) -> None:
        """Forget write times older than the window (they no longer delay anything)."""
        horizon = self.clock() - self.settings.coalesce_window
        if len(self._written) > 1024:
            self._written = {k: t for k, t in self._written.items() if t > horizon}

    def _wait(self, group: list[jetstream.Delivery], error: reconciling.Waiting) -> None:
        limit = self.settings.missing_service_retries
        for d in group:
            if _deliveries(d) >= limit:
                _reject(d, f"{error} after {limit} deliveries")
            else:
                d.retry(str(error), delay=error.delay)
                metrics.EDGES.labels("waiting").inc()


_DROPS = {
    admitting.DISPATCHED: "dispatched elsewhere: a dispatch sends it past the global-sidecar",
    admitting.EXTERNAL: "external-dropped: an external host neither allowed nor a ServiceEntry",
    admitting.UNKNOWN_SERVICE: "unknown-service: the Service this FQDN names does not exist",
}
"""How a refusal of the admission gate reads in the decisions record."""


def _names_a_caller(event: events.DependencyObserved) -> bool:
    """Whether a rejected edge names a caller a fence could have (else it is noted nowhere)."""
    name = event.source_name
    return (
        event.source_kind != "unresolved"
        and hosts.is_valid_namespace(event.source_namespace)
        and (hosts.is_valid_namespace(name) or hosts.is_valid_host(name))
    )


def _deliveries(delivery: jetstream.Delivery) -> int:
    try:
        return int(delivery.msg.metadata.num_delivered)
    except Exception:  # not a JetStream message (tests) or an odd reply subject
        return 1


def _reject(delivery: jetstream.Delivery, reason: str) -> None:
    delivery.reject(reason)
    metrics.EDGES.labels("rejected").inc()
    metrics.DEAD_LETTERS.labels(_reason_class(reason)).inc()


def _reason_class(reason: str) -> str:
    for prefix, name in (
        ("invalid host", "invalid-host"),
        ("invalid caller", "invalid-caller"),
        ("invalid port", "invalid-destination"),
        ("invalid destination", "invalid-destination"),
        ("unresolved", "unresolved-caller"),
        ("service not found", "no-service"),
    ):
        if reason.startswith(prefix):
            return name
    return "refused"
