"""Periodic drift repair: managed Sidecars are brought back to the last event of their fence.

The desired state is the last `FenceChanged` of every fence subject still in the LAZYLOAD_FENCES
stream (`jetstream.last_per_subject`). Against the managed Sidecars the sink lists, a
repair:

- restores a managed Sidecar that was edited by hand or deleted while its fence is enabled;
- deletes the managed Sidecar of a fence whose last event says disabled or deleted (an orphan);
- leaves alone a managed Sidecar without any fence event (its events may have aged out of the
  stream; its ownerReference lets Kubernetes collect it with the ServiceFence) and, as always, any
  Sidecar lazyload does not manage.

Only fences that differ are applied, through the same path as fence events (`FenceHandler.process`,
which reads the object again and writes on its resourceVersion), so a repair never undoes a newer
event: the stored revision annotation makes an older one stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter

from lazyload_common import codec, errors, events, jetstream, subjects
from nats.js import JetStreamContext

from lazyload_sidecar_writer import errors as writer_errors
from lazyload_sidecar_writer import planning, rendering, validating
from lazyload_sidecar_writer.consuming import FenceHandler, FenceKey
from lazyload_sidecar_writer.rendering import RawObject
from lazyload_sidecar_writer.settings import WriterSettings
from lazyload_sidecar_writer.sinks import Sink

log = logging.getLogger(__name__)


async def repair_loop(
    js: JetStreamContext,
    sink: Sink,
    handler: FenceHandler,
    settings: WriterSettings,
    stop: asyncio.Event,
) -> None:
    """Repair every `sidecar.repair_interval` seconds until `stop` is set."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=settings.sidecar.repair_interval)
        if stop.is_set():
            return
        try:
            counts = await repair_once(js, sink, handler)
        except Exception as e:  # the next round tries again; the consumer is unaffected
            log.warning("drift repair failed: %s", e)
            continue
        if counts.get("repaired") or counts.get("failed"):
            log.info("drift repair: %s", dict(counts))


async def repair_once(js: JetStreamContext, sink: Sink, handler: FenceHandler) -> Counter[str]:
    """One repair round; counts `repaired`, `failed`, `in-sync` and `no-event` fences."""
    latest = await latest_fences(js)
    stored = {_key(obj): obj for obj in await sink.list_managed()}
    counts: Counter[str] = Counter()
    counts["no-event"] = len(stored.keys() - latest.keys())
    for key, event in sorted(latest.items()):
        if not drifted(event, stored.get(key), handler.settings):
            counts["in-sync"] += 1
            continue
        sink.forget(*key)  # what the sink remembers writing is not what is stored any more
        try:
            result = await handler.process(event, note="drift repaired")
        except (errors.PermanentError, errors.TemporaryError) as e:
            log.warning("drift repair of %s/%s failed: %s", *key, e)
            counts["failed"] += 1
            continue
        counts["repaired" if result.write else "in-sync"] += 1
    return counts


def drifted(
    event: events.FenceChanged, current: RawObject | None, settings: WriterSettings
) -> bool:
    """True when the fence's last event and the managed Sidecar (or its absence) disagree."""
    live = event.enabled and not event.deleted
    if not live:
        return current is not None
    try:
        desired = rendering.render(event, settings)
        validating.validate(desired)
    except (writer_errors.Unrenderable, writer_errors.InvalidSidecar):
        return False  # reported when the event was consumed; nothing a repair can do
    track = settings.sidecar.sink == "kube"
    return planning.plan(event, desired, current, track_revision=track).action in planning.WRITES


async def latest_fences(js: JetStreamContext) -> dict[FenceKey, events.FenceChanged]:
    """The last `FenceChanged` of every fence subject in the stream."""
    latest: dict[FenceKey, events.FenceChanged] = {}
    subject = f"{subjects.FENCE_PREFIX}.>"
    for msg in await jetstream.last_per_subject(js, subjects.FENCES_STREAM, subject):
        with contextlib.suppress(errors.DecodeError):
            event = codec.decode_as(msg.data, events.FenceChanged)
            key = (event.namespace, event.name)
            if key not in latest or event.revision >= latest[key].revision:
                latest[key] = event
    return latest


def _key(obj: RawObject) -> FenceKey:
    meta = obj.get("metadata", {})
    return (str(meta.get("namespace", "")), str(meta.get("name", "")))
