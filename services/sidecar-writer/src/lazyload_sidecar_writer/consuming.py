"""Fence events in, Sidecars out: the batch handler behind `lazyload_common.jetstream.consume`.

Per batch: only the newest revision of each fence is applied, older deliveries of the same fence
are acked as superseded. A fence written less than `sidecar.coalesce_window` ago is not written
again at once: its delivery is nak'ed until the window ends, so a burst of revisions gives few
writes. Fences are applied concurrently (at most `sidecar.max_concurrency`), each one:

- an event whose namespace, name or uid are no Kubernetes names (a deleted or disabled
  fence's too: they become API and file paths), of a namespace lazyload does not manage (`sidecar.allow_namespaces`,
  `sidecar.deny_namespaces`: Kubernetes' own by default), or, before a Sidecar is written, for a
  ServiceFence that does not exist with the event's uid (`guarding`) -> refused: dead-lettered
  and counted (`lazyload_sidecar_writer_refused_total`), nothing written or reported;
- disabled or deleted fence -> delete the managed Sidecar;
- no workload selector -> nothing written, `SidecarApplied(action="conflict")` says why;
- rendered Sidecar invalid (schema/hosts) or refused by the API (400/422) -> dead-lettered
  (`delivery.reject`) with `SidecarApplied(action="dead-lettered")`;
- API still failing after the retries -> `delivery.retry` (JetStream redelivers later);
- otherwise the sink's result is published as `SidecarApplied` on `lazyload.sidecar.<ns>.<name>`
  (nothing is published for a stale revision). The consume loop acks after this handler returned.

With a `reporter` (the kube sink), each outcome is also told on the ServiceFence (`reporting`):
its `SidecarReady` condition, and an Event on a Sidecar conflict. Per-fence memory (last write,
newest processed revision, last condition) is bounded (`sidecar.max_tracked_fences`, LRU).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from lazyload_common import codec, errors, events, jetstream, subjects
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from lazyload_sidecar_writer import errors as writer_errors
from lazyload_sidecar_writer import guarding, metrics, rendering, reporting, validating
from lazyload_sidecar_writer.bounded import Lru
from lazyload_sidecar_writer.settings import SERVICE, WriterSettings
from lazyload_sidecar_writer.sinks import Result, Sink

log = logging.getLogger(__name__)
Publisher = Callable[[events.SidecarApplied], Awaitable[None]]
FenceKey = tuple[str, str]

DURABLE = "sidecar-writer"


def consumer_spec(settings: WriterSettings) -> jetstream.ConsumerSpec:
    """The durable pull consumer of fence events (replicas share the work)."""
    return jetstream.ConsumerSpec(
        stream=subjects.FENCES_STREAM,
        durable=DURABLE,
        filter_subject=f"{subjects.FENCE_PREFIX}.>",
        service=SERVICE,
        model=events.FenceChanged,
        # Everything that arrives within the coalescing window is one batch, and only the newest
        # revision of each fence in a batch is written: at most one write per fence per window.
        linger=settings.sidecar.coalesce_window,
        # Behind a burst, fetch what is waiting in large pulls: the revisions of one fence then
        # meet in one batch and only the newest is written (256 per pull gave ~1 per fence).
        batch=1024,
        max_batch=4096,
        max_deliver=settings.sidecar.max_deliver,
        stream_replicas=settings.nats.stream_replicas,
    )


def publisher(js: JetStreamContext, *, replicas: int = 1) -> Publisher:
    """Publish `SidecarApplied` on the Sidecar's subject, deduplicated per revision and result
    (LAZYLOAD_SIDECARS created again, with `replicas`, when it was deleted)."""

    async def publish(event: events.SidecarApplied) -> None:
        msg_id = (
            f"{event.namespace}/{event.name}@{event.revision}:{event.action}:"
            f"{event.resource_version}"
        )
        await jetstream.publish(
            js,
            subjects.sidecar(event.namespace, event.name),
            event,
            msg_id=msg_id,
            replicas=replicas,
        )

    return publish


def newest_in_stream(
    js: JetStreamContext,
) -> Callable[[events.FenceChanged], Awaitable[int | None]]:
    """The revision of the last event on the fence's subject (same ServiceFence uid), or None."""

    async def newest(event: events.FenceChanged) -> int | None:
        subject = subjects.fence(event.namespace, event.name)
        try:
            msg = await js.get_last_msg(subjects.FENCES_STREAM, subject)
        except NotFoundError:
            return None
        if msg.data is None:
            return None
        last = codec.decode_as(msg.data, events.FenceChanged)
        return last.revision if last.uid == event.uid else None

    return newest


def latest_per_fence(
    batch: list[jetstream.Delivery],
) -> tuple[list[jetstream.Delivery], list[jetstream.Delivery]]:
    """Split a batch into the newest delivery of each fence and the superseded rest.

    On equal revisions the later delivery wins (a redelivery carries the same state).
    """
    newest: dict[FenceKey, jetstream.Delivery] = {}
    superseded: list[jetstream.Delivery] = []
    for delivery in batch:
        key = (delivery.event.namespace, delivery.event.name)
        previous = newest.get(key)
        if previous is None or delivery.event.revision >= previous.event.revision:
            newest[key] = delivery
            if previous is not None:
                superseded.append(previous)
        else:
            superseded.append(delivery)
    return list(newest.values()), superseded


class FenceHandler:
    """The batch handler (see the module docstring); `sink` is where Sidecars go."""

    def __init__(
        self,
        settings: WriterSettings,
        sink: Sink,
        publish: Publisher,
        *,
        clock: Callable[[], float] = time.monotonic,
        reporter: reporting.Reporter | None = None,
        guard: guarding.FenceGuard | None = None,
    ) -> None:
        self.settings = settings
        self.sink = sink
        self.publish = publish
        self.clock = clock
        self.reporter = reporter
        self.guard = guard
        limit = settings.sidecar.max_tracked_fences
        self._last_write: Lru[FenceKey, float] = Lru(limit)
        self._processed: Lru[tuple[str, str, str], int] = Lru(limit)
        self._slots = asyncio.Semaphore(settings.sidecar.max_concurrency)

    async def __call__(self, batch: list[jetstream.Delivery]) -> None:
        winners, superseded = latest_per_fence(batch)
        if superseded:
            metrics.OUTCOMES.labels("superseded").inc(len(superseded))
        due = [d for d in winners if not self._coalesced(d)]
        await asyncio.gather(*(self._bounded(d) for d in due))

    def _coalesced(self, delivery: jetstream.Delivery) -> bool:
        """Hold back a fence written within the window: nak it until the window ends."""
        window = self.settings.sidecar.coalesce_window
        if window <= 0:
            return False
        now = self.clock()
        key = (delivery.event.namespace, delivery.event.name)
        last = self._last_write.get(key)
        if last is None or now - last >= window:
            self._last_write.pop(key)
            return False
        delivery.retry("coalescing", delay=max(window - (now - last), 0.001))
        metrics.OUTCOMES.labels("coalesced").inc()
        return True

    async def _bounded(self, delivery: jetstream.Delivery) -> None:
        async with self._slots:
            with metrics.APPLY_SECONDS.time():
                await self._handle(delivery)

    async def _handle(self, delivery: jetstream.Delivery) -> None:
        event: events.FenceChanged = delivery.event
        key = f"{event.namespace}/{event.name}"
        try:
            await self.process(event)
        except writer_errors.Refused as e:
            _refuse(delivery, e)
        except errors.PermanentError as e:
            await self._dead_letter(delivery, e)
        except errors.TemporaryError as e:
            log.warning("fence %s revision %d: %s", key, event.revision, e)
            metrics.OUTCOMES.labels("retried").inc()
            delivery.retry(str(e), delay=e.delay)
        except Exception as e:
            log.exception("fence %s revision %d failed", key, event.revision)
            metrics.OUTCOMES.labels("retried").inc()
            delivery.retry(f"{type(e).__name__}: {e}", delay=self.settings.sidecar.redelivery_delay)

    async def process(self, event: events.FenceChanged, *, note: str = "") -> Result:
        """Apply one fence, count it and publish `SidecarApplied` (not for a stale revision).

        An event older than one this process already processed for the same ServiceFence (uid) is
        stale without asking the sink: a redelivered revision 5 must not undo a revision 6 that
        left the Sidecar unchanged (and so did not move its revision annotation).
        Raises `Refused` (an event not to act on at all: dead-letter, nothing else),
        `PermanentError` (dead-letter) or `TemporaryError` (retry later).
        """
        self.admit(event)
        incarnation = (event.namespace, event.name, event.uid)
        newest = self._processed.get(incarnation)
        newest = -1 if newest is None else newest
        if event.revision < newest:
            result = Result(
                "stale", message=f"fence revision {event.revision} < {newest} processed"
            )
            self._record(event, result)
            return result
        result, hosts = await self.apply(event)
        self._processed.set(incarnation, max(newest, event.revision))
        self._record(event, result)
        await self._report(event, result)
        if result.action != "stale":
            report = _applied(event, result, hosts)
            if note:
                report = report.model_copy(
                    update={"message": "; ".join(filter(None, [note, report.message]))}
                )
            try:
                await self.publish(report)
            except Exception as e:  # the write is done; redelivery finds it unchanged and reports
                raise errors.TemporaryError(f"publish SidecarApplied: {e}", delay=1.0) from e
        return result

    def admit(self, event: events.FenceChanged) -> None:
        """Raise `Refused` for an event the writer must not act on, whatever it asks (a deleted
        fence too): a namespace, name or uid no ServiceFence can have (they become API and file
        paths), or a namespace lazyload does not manage. Hosts and selector are checked in the
        rendered Sidecar of a live fence (`validating.validate`)."""
        problems = validating.event_problems(event)
        if problems:
            raise writer_errors.Refused("invalid-event", "; ".join(problems))
        if not self.settings.sidecar.manages(event.namespace):
            raise writer_errors.Refused(
                "namespace-not-managed",
                f"lazyload manages no Sidecar in namespace {event.namespace!r} "
                "(sidecar.allow_namespaces / sidecar.deny_namespaces)",
            )

    async def apply(self, event: events.FenceChanged) -> tuple[Result, list[str]]:
        """Render, validate and apply one fence; the egress hosts go with the result. A Sidecar
        is only written for a ServiceFence that exists with the event's uid (`guard`)."""
        if event.deleted or not event.enabled:
            if event.deleted and self.guard is not None:
                self.guard.forget(event)
            return await self.sink.apply(event, None), []
        try:
            desired = rendering.render(event, self.settings)
        except writer_errors.Unrenderable as e:
            metrics.RENDER_FAILURES.labels("no-selector").inc()
            return Result("conflict", message=str(e), reason="NoWorkloadSelector"), []
        try:
            validating.validate(desired)
        except writer_errors.InvalidSidecar:
            metrics.RENDER_FAILURES.labels("invalid").inc()
            raise
        if self.guard is not None:
            await self.guard.check(event)
        return await self.sink.apply(event, desired), list(desired["spec"]["egress"][0]["hosts"])

    async def _report(self, event: events.FenceChanged, result: Result) -> None:
        """Tell the fence's status (raises `TemporaryError` when the API failed: redelivery)."""
        if self.reporter is None:
            return
        if event.deleted:
            self.reporter.forget(event)
            return
        condition = reporting.condition_for(event, result)
        if condition is not None:
            await self.reporter.report(event, condition)

    def _record(self, event: events.FenceChanged, result: Result) -> None:
        key = f"{event.namespace}/{event.name}"
        metrics.OUTCOMES.labels(result.action).inc()
        if result.write is not None:
            metrics.WRITES.labels(result.write).inc()
            if result.action == "applied":
                now = time.time()
                for first in event.first_seen.values():
                    metrics.FIRST_CALL_TO_SIDECAR.observe(max(0.0, now - first))
            self._last_write.set((event.namespace, event.name), self.clock())
            log.info(
                "Sidecar %s: %s (fence revision %d)",
                key,
                result.write,
                event.revision,
                extra={"fence": key},
            )
        elif result.action == "conflict":
            log.warning("Sidecar %s not written: %s", key, result.message, extra={"fence": key})
        elif result.action == "stale":
            log.info("fence %s: ignored, %s", key, result.message, extra={"fence": key})

    async def _dead_letter(self, delivery: jetstream.Delivery, error: Exception) -> None:
        event: events.FenceChanged = delivery.event
        reason = (
            "invalid-render" if isinstance(error, writer_errors.InvalidSidecar) else "api-rejected"
        )
        log.error(
            "fence %s/%s revision %d dead-lettered: %s",
            event.namespace,
            event.name,
            event.revision,
            error,
        )
        metrics.DEAD_LETTERS.labels(reason).inc()
        metrics.OUTCOMES.labels("dead-lettered").inc()
        delivery.reject(f"{reason}: {error}")
        report = Result("conflict", message=f"{reason}: {error}")
        if self.reporter is not None:
            try:
                condition = reporting.dead_letter_condition(reason, str(error))
                await self.reporter.report(event, condition)
            except Exception as e:  # the dead letter and SidecarApplied carry the reason
                log.warning("could not report a dead letter on the fence: %s", e)
        try:
            await self.publish(_applied(event, report, [], action="dead-lettered"))
        except Exception as e:  # the dead letter itself carries the reason
            log.warning("could not publish SidecarApplied of a dead letter: %s", e)


def _refuse(delivery: jetstream.Delivery, error: writer_errors.Refused) -> None:
    """Dead-letter an event the writer must not act on: no report on a fence, no
    `SidecarApplied` (its namespace and name may be anything, or name a fence that is not)."""
    event: events.FenceChanged = delivery.event
    log.warning(
        "fence event %r/%r revision %d refused: %s",
        event.namespace[:100],
        event.name[:100],
        event.revision,
        error,
    )
    metrics.REFUSED.labels(error.reason).inc()
    metrics.OUTCOMES.labels("dead-lettered").inc()
    delivery.reject(str(error))


def _applied(
    event: events.FenceChanged, result: Result, hosts: list[str], *, action: str = ""
) -> events.SidecarApplied:
    return events.SidecarApplied(
        namespace=event.namespace,
        name=event.name,
        revision=event.revision,
        action=action or result.action,  # type: ignore[arg-type]  # callers pass SidecarApplied actions
        egress_hosts=hosts,
        resource_version=result.resource_version,
        message=result.message,
    )
