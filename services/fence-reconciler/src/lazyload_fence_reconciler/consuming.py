"""Dependency events in: the batch handler on `lazyload_common.jetstream.consume`.

A batch is validated message by message (an invalid caller or host is rejected, i.e.
dead-lettered on `lazyload.dlq.fence-reconciler` by the consume loop), then grouped by caller
fence, and each fence is learned once for all its edges: one status write per fence per batch.
Outcomes map onto the deliveries: success or a policy "ignore" -> ack (by the consume loop, after
this handler returned, so after the fence write and its event); a dispatched host or an
external host neither allowed nor a ServiceEntry (`admitting`) -> ack, counted; a Service not
known yet -> retry with delay, and dead-letter after `missing_service_retries` deliveries; a refused write ->
reject; anything else -> retry. This module never acks.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from lazyload_common import errors, events, hosts, jetstream, subjects

from lazyload_fence_reconciler import desiring, metrics, reconciling
from lazyload_fence_reconciler.settings import SERVICE, FenceSettings

log = logging.getLogger(__name__)
DURABLE = "fence-reconciler"


def consumer_spec(settings: FenceSettings) -> jetstream.ConsumerSpec:
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
    )


def invalid_reason(event: events.DependencyObserved) -> str | None:
    """Why an edge can never be learned, or None when it is fine."""
    if event.source_kind == "unresolved":
        return "unresolved caller"
    if not hosts.is_valid_namespace(event.source_namespace):
        return f"invalid caller namespace {event.source_namespace!r}"
    name = event.source_name
    if not (hosts.is_valid_namespace(name) or hosts.is_valid_host(name)):
        return f"invalid caller name {name!r}"
    if not hosts.is_valid_domain(event.destination_host):
        return f"invalid host {event.destination_host[:300]!r}"
    return None


class BatchHandler:
    """Groups a batch by fence and learns each group through the reconciler."""

    def __init__(self, reconciler: reconciling.Reconciler, settings: FenceSettings) -> None:
        self.reconciler = reconciler
        self.settings = settings
        self._slots = asyncio.Semaphore(settings.concurrency)

    async def __call__(self, batch: list[jetstream.Delivery]) -> None:
        groups: dict[reconciling.Key, list[jetstream.Delivery]] = defaultdict(list)
        workloads: dict[reconciling.Key, str] = {}
        identity = self.settings.workload_identity()
        for delivery in batch:
            event: events.DependencyObserved = delivery.event
            reason = invalid_reason(event)
            if reason is not None:
                _reject(delivery, reason)
                continue
            key = (event.source_namespace, event.source_name)
            if identity is not None and event.source_kind == "workload":
                key = (event.source_namespace, identity.fence_name(event.source_name))
                workloads[key] = event.source_name
            groups[key].append(delivery)
        await asyncio.gather(
            *(self._learn(key, group, workloads.get(key)) for key, group in groups.items())
        )

    async def _learn(
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
        if not edges:
            return
        async with self._slots:
            try:
                outcome = await self.reconciler.learn(key, edges, workload=workload)
            except reconciling.Waiting as e:
                self._wait(group, e)
                return
            except errors.PermanentError as e:
                for d in group:
                    _reject(d, str(e))
                return
            except Exception as e:
                log.warning("learning %d edges of %s/%s failed: %s", len(group), *key, e)
                delay = e.delay if isinstance(e, errors.TemporaryError) else 1.0
                for d in group:
                    d.retry(str(e), delay=delay)
                metrics.EDGES.labels("failed").inc(len(group))
                return
        metrics.EDGES.labels("ignored" if outcome.startswith("ignored") else "learned").inc(
            len(edges)
        )
        if outcome.startswith("ignored"):
            log.debug("edges of %s/%s %s", key[0], key[1], outcome)

    def _wait(self, group: list[jetstream.Delivery], error: reconciling.Waiting) -> None:
        limit = self.settings.missing_service_retries
        for d in group:
            if _deliveries(d) >= limit:
                _reject(d, f"{error} after {limit} deliveries")
            else:
                d.retry(str(error), delay=error.delay)
                metrics.EDGES.labels("waiting").inc()


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
        ("unresolved", "unresolved-caller"),
        ("service not found", "no-service"),
    ):
        if reason.startswith(prefix):
            return name
    return "refused"
