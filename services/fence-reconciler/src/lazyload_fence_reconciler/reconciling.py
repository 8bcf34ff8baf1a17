"""The reconcile cycle: read a fence, compute it (`desiring`), write it (`applying`), publish it.

Triggers: dependency edges (`learn`, from `consuming`), watch events of fences and Services (a
keyed work queue drained by `run_worker`), the start-up and periodic resync, and the admin API
(`reconcile(reset=True)`). One lock per fence serialises them inside a replica; across replicas
the resourceVersion of the status write does.

This class holds only the triggers and the I/O: every decision is a pure function elsewhere -
whether to create, keep or drop a fence (`planning`, `policies`), its status (`desiring`), the
event to publish (`changes`), what a cycle decided about its hosts (`deciding.of_cycle`).

Publishing rule: the fence status records the desired state and its `revision`; a FenceChanged is
published when the recorded revision is above the last one published for that fence (`sent`,
seeded at start-up from the last event of each subject in the stream). So an event is published
after the write that bumped the revision, and re-published after a crash between the two.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from lazyload_common import errors, events, hosts, kube

from lazyload_fence_reconciler import (
    applying,
    changes,
    deciding,
    desiring,
    fences,
    metrics,
    planning,
    policies,
    publishing,
    tombstoning,
    watching,
)
from lazyload_fence_reconciler.settings import FenceSettings

log = logging.getLogger(__name__)
Key = tuple[str, str]
WAKE_MARGIN = 0.05
"""Seconds after a deadline that its fence is recomputed (a host expires strictly after it)."""


class Waiting(errors.TemporaryError):
    """The caller has no fence and its Service is not known (yet)."""


class Reconciler:
    """Owns the reconcile cycle of every fence of this replica."""

    def __init__(
        self,
        *,
        settings: FenceSettings,
        applier: applying.Applier,
        publisher: publishing.Publisher,
        cluster: watching.Cluster,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.policy = settings.policy()
        self.scope = settings.scope()
        self.gate = settings.gate()
        self.workloads = settings.workload_identity()
        self.applier, self.publisher, self.cluster = applier, publisher, cluster
        self.clock = clock
        self.decisions = deciding.Decisions(clock=clock)
        """What was recently decided about each fence's hosts (the admin API serves it)."""
        self.sent: dict[Key, changes.Sent] = {}
        self.tombstones = tombstoning.Tombstones(cluster, applier, clock, self._workload_pods)
        self._gone: dict[Key, kube.RawObject] = {}
        self._latest: dict[Key, kube.RawObject] = {}
        self._locks: dict[Key, asyncio.Lock] = {}
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        sent = self.sent
        metrics.FENCES.labels("enabled").set_function(
            lambda: changes.fences_published(list(sent.values()), enabled=True)
        )
        metrics.FENCES.labels("disabled").set_function(
            lambda: changes.fences_published(list(sent.values()), enabled=False)
        )
        metrics.HOSTS.set_function(lambda: changes.hosts_published(list(sent.values())))
        self._pending: set[Key] = set()
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._eager_pending: set[Key] = set()
        self._eager_total = 0

    # -- triggers ---------------------------------------------------------------------------

    async def learn(
        self, key: Key, edges: Sequence[desiring.Edge], *, workload: str | None = None
    ) -> str:
        """Learn edges of caller `key` into its fence, creating it if policy says so; `workload`
        is the pod label value of a workload caller (its fence selects those pods)."""
        async with self._lock(key):
            obj = self._current(key) or await self.applier.get(*key)
            if obj is not None and not self._serves(obj):
                revision = planning.istio_revision(obj)
                return f"ignored: fence of another Istio revision ({revision!r})"
            if obj is None:
                identity = self.workloads
                workload = workload if identity is not None else None
                verdict = planning.creation(self._facts(key, workload), self.scope)
                if verdict.outcome is policies.Outcome.IGNORE:
                    return f"ignored: {verdict.reason}"
                if verdict.outcome is policies.Outcome.WAIT:
                    raise Waiting(
                        f"{verdict.reason}: {key[0]}/{key[1]}",
                        delay=self.settings.missing_service_delay,
                    )
                labels = None if identity is None or workload is None else {identity.key: workload}
                obj = await self.applier.create(*key, labels)
            await self._converge(obj, edges)
            return "learned"

    async def reconcile(self, key: Key, *, reset: bool = False) -> kube.RawObject | None:
        """Recompute a fence (or announce its deletion); None when there is no such fence."""
        async with self._lock(key):
            obj = self._current(key)
            if obj is None and reset:
                obj = await self.applier.get(*key)
            if obj is None:
                gone = self._gone.pop(key, None)
                if gone is not None:
                    await self._announce_deletion(key, gone)
                await self.tombstones.refresh(key, exists=False)
                if not planning.eager(self._facts(key, None), self.scope):
                    self._eager_pending.discard(key)
                    return None
                obj = await self.applier.create(*key)
                metrics.AUTO_FENCED.inc()
                self._eager_done(key)
            else:
                if not self._serves(obj):
                    return None  # another revision's reconciler owns it
                await self.tombstones.refresh(key, exists=True)
                facts = self._facts(key, self._workload_of(key))
                if planning.drop(fences.Fence.from_raw(obj), facts, self.scope):
                    await self.applier.delete(obj)  # only as read: else retried, re-decided
                    log.info("deleted ServiceFence %s/%s: Service gone or not fenced", *key)
                    return None
            written, _ = await self._converge(obj, (), reset=reset)
            return written

    def on_fence_event(self, kind: str, obj: kube.RawObject) -> None:
        """Reflector callback (event loop): remember deletions, queue the fence."""
        if kind == "SYNCED":
            return
        key = kube.object_key(obj)
        if not self._serves(obj):
            return  # a fence of another Istio revision: not ours to learn into or announce
        if kind == "DELETED":
            self._gone[key] = obj
            self._latest.pop(key, None)
            if not fences.Fence.from_raw(obj).created_by_controller:
                self.tombstones.add(key)
        else:
            self._gone.pop(key, None)
            self.tombstones.discard(key)
            written = self._latest.get(key)
            if written is not None and planning.superseded(written, obj):
                del self._latest[key]  # the store caught up: one copy of the fence is enough
        self.enqueue(key)

    def on_service_event(self, kind: str, obj: kube.RawObject) -> None:
        """A Service changed: its fence's selector may have, it may need a fence or lose one, and
        fences with label selectors may gain or lose it."""
        if kind == "SYNCED":
            return
        self.enqueue(kube.object_key(obj))
        for key in planning.selector_fences(self.cluster.all_fences()):
            self.enqueue(key)

    def on_pod_event(self, kind: str, obj: kube.RawObject) -> None:
        """A labelled pod came or went: its workload fence may have to go (Slime)."""
        if kind == "SYNCED" or self.workloads is None:
            return
        value = (obj.get("metadata", {}).get("labels") or {}).get(self.workloads.key)
        if value:
            self.enqueue((kube.object_key(obj)[0], self.workloads.fence_name(value)))

    def on_virtual_service_event(self, kind: str, obj: kube.RawObject) -> None:
        """Routes changed: recompute every fence (unchanged ones cost no write)."""
        del obj
        if kind == "SYNCED":
            return
        for key in self.cluster.fence_keys():
            self.enqueue(key)

    def admit(self, edge: desiring.Edge) -> str | None:
        """None when the edge may be learned, else why not (`admitting`)."""
        service = hosts.service_of(edge.host, self.cluster.cluster_domain)
        return self.gate.verdict(
            edge.host,
            external=edge.external,
            registered=edge.registered,
            service_entry_hosts=self.cluster.service_entry_hosts(),
            service_exists=None if service is None else self.cluster.service(service) is not None,
        )

    def on_namespace_event(self, kind: str, obj: kube.RawObject) -> None:
        """Namespace labels take part in `slime.io/serviceFenced`: look at its Services again."""
        if kind == "SYNCED":
            return
        namespace = obj.get("metadata", {}).get("name", "")
        for key in (*self.cluster.service_keys(namespace), *self.cluster.fence_keys(namespace)):
            self.enqueue(key)

    def enqueue(self, key: Key) -> None:
        if key not in self._pending:
            self._pending.add(key)
            self._queue.put_nowait(key)

    def enqueue_all(self) -> None:
        missing = {
            key
            for key in self.cluster.service_keys()
            if self.cluster.fence(key) is None
            and planning.eager(self._facts(key, None), self.scope)
        }
        if missing:
            self._eager_pending |= missing
            self._eager_total = len(self._eager_pending)
            metrics.AUTO_FENCE_PENDING.set(len(self._eager_pending))
            log.info(
                "auto-fence: %d Services to fence before any traffic (at most %.0f writes/s)",
                len(missing),
                self.applier.limiter.qps,
            )
        tombstoned = self.tombstones.keys()  # void ones (Service deleted while down) go
        for key in (*self.cluster.fence_keys(), *self.cluster.service_keys(), *tombstoned):
            self.enqueue(key)
        for key in planning.vanished(self.sent, set(self.cluster.fence_keys())):
            self._gone.setdefault(key, planning.stub(key, self.sent[key].uid))
            self.enqueue(key)

    # -- loops ------------------------------------------------------------------------------

    async def seed(self) -> None:
        """Learn what was published before this process started, from the stream."""
        for event in await self.publisher.last_events():
            self.sent[(event.namespace, event.name)] = changes.Sent.of(event)
        log.info("seeded %d published fences from the stream", len(self.sent))

    async def run_worker(self) -> None:
        """Drain the work queue forever (cancelled at shutdown)."""
        while True:
            key = await self._queue.get()
            self._pending.discard(key)
            try:
                await self.reconcile(key)
            except errors.PermanentError as e:
                log.error("reconcile of %s/%s refused: %s; left to the next resync", *key, e)
            except Exception as e:
                log.warning("reconcile of %s/%s failed: %s; retrying", key[0], key[1], e)
                asyncio.get_running_loop().call_later(2.0, self.enqueue, key)

    async def run_resync(self, interval: float) -> None:
        """Queue every fence every `interval` seconds (time-based recycling, missed events)."""
        while True:
            await asyncio.sleep(interval)
            self.enqueue_all()

    # -- the cycle --------------------------------------------------------------------------

    async def _converge(
        self, obj: kube.RawObject, edges: Sequence[desiring.Edge], *, reset: bool = False
    ) -> tuple[kube.RawObject, desiring.Desired]:
        key = kube.object_key(obj)
        selector = self.cluster.selector(key)
        mesh = self.cluster.mesh()

        def compute(current: kube.RawObject) -> tuple[dict[str, Any] | None, desiring.Desired]:
            fence = fences.Fence.from_raw(current)
            desired = desiring.desire(
                fence,
                edges,
                service_selector=selector,
                now=self.clock(),
                policy=self.policy,
                reset=reset,
                revision_floor=changes.revision_floor(self.sent.get(key), fence.uid),
                mesh=mesh,
            )
            return (desired.status if desired.write_needed else None), desired

        before = desiring.recorded(fences.Fence.from_raw(obj))
        written, desired = await self.applier.apply_status(obj, compute)
        for host, outcome, reason in deciding.of_cycle(
            edges,
            desired,
            before,
            reset=reset,
            max_learned_hosts=self.policy.max_learned_hosts,
        ):
            self.decisions.note(key, host, outcome, reason)
        if desired.capped:
            metrics.EDGES.labels("host-cap").inc(len(desired.capped))
            log.warning(
                "fence %s/%s is at its cap of %d learned hosts: %d new hosts not learned",
                *key,
                self.policy.max_learned_hosts,
                len(desired.capped),
            )
        self._latest[key] = written
        event = changes.due(
            fences.Fence.from_raw(written), desired, self.sent.get(key), now=self.clock()
        )
        if event is not None:
            await self._send(event)
        self._wake_at(key, desired.next_change)
        return written, desired

    def _wake_at(self, key: Key, when: float | None) -> None:
        """Recompute `key` right after `when` (a deadline), not at the next resync."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if when is None:
            return
        delay = max(0.0, when - self.clock()) + WAKE_MARGIN
        self._timers[key] = asyncio.get_running_loop().call_later(delay, self._wake, key)

    def _wake(self, key: Key) -> None:
        self._timers.pop(key, None)
        self.enqueue(key)

    async def _announce_deletion(self, key: Key, obj: kube.RawObject) -> None:
        event = changes.deletion(fences.Fence.from_raw(obj), self.sent.get(key), now=self.clock())
        if event is not None:
            await self._send(event)

    async def _send(self, event: events.FenceChanged) -> None:
        await self.publisher.publish(event)
        self.sent[(event.namespace, event.name)] = changes.Sent.of(event)

    def _eager_done(self, key: Key) -> None:
        if key not in self._eager_pending:
            return
        self._eager_pending.discard(key)
        left = len(self._eager_pending)
        metrics.AUTO_FENCE_PENDING.set(left)
        if planning.progress_due(self._eager_total, left):
            done = self._eager_total - left
            log.info("auto-fence: %d of %d Services fenced", done, self._eager_total)

    # -- helpers ----------------------------------------------------------------------------

    def _facts(self, key: Key, workload: str | None) -> planning.Facts:
        """What the caches know about fence name `key`; with `workload` (the pod label value of
        a workload fence) how many pods carry it."""
        namespace = key[0]
        return planning.Facts(
            namespace=namespace,
            service=self.cluster.service(key),
            namespace_labels=self.cluster.namespace_labels(namespace),
            tombstoned=self.tombstones.holds(key),
            workload_pods=None
            if workload is None
            else self.cluster.workload_pods(namespace, workload),
        )

    def _workload_pods(self, key: Key) -> int | None:
        """The pods of a workload fence's workload; None for other fences."""
        workload = self._workload_of(key)
        return None if workload is None else self.cluster.workload_pods(key[0], workload)

    def _workload_of(self, key: Key) -> str | None:
        """The pod label value a workload fence's name stands for; None for other fences."""
        return self.workloads.value_of(key[1]) if self.workloads is not None else None

    def _serves(self, obj: kube.RawObject) -> bool:
        """Whether this reconciler's Istio revision owns the fence `obj` (`fence.istio_rev`)."""
        return planning.serves(obj, self.settings.istio_rev, strict=self.settings.strict_rev)

    def _lock(self, key: Key) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def _current(self, key: Key) -> kube.RawObject | None:
        """The newest fence object known: the watch store or our own last write."""
        return planning.newest(self.cluster.fence(key), self._latest.get(key))
