"""Fence events on JetStream: publish (awaited, deduplicated by id) and read back the last ones.

A FenceChanged is published only after the fence write it describes returned. Its `Nats-Msg-Id`
is `<ns>/<name>/<uid>/<revision>`, so a second publication of the same revision (by the other
replica, or after a restart) inside the stream's duplicate window is dropped by the server. The
last event per subject is what the reconciler compares with at start-up (`last_events`).
"""

from __future__ import annotations

import logging

from lazyload_common import codec, errors, events, hosts, jetstream, subjects
from nats.js import JetStreamContext

from lazyload_fence_reconciler import metrics

log = logging.getLogger(__name__)


def usable(event: events.FenceChanged) -> bool:
    """True when the event's namespace and name can be a ServiceFence's (an event on the stream
    is only the word of whoever could publish there; the seed acts on it)."""
    return hosts.is_valid_namespace(event.namespace) and hosts.is_object_name(event.name)


def message_id(event: events.FenceChanged) -> str:
    suffix = "/deleted" if event.deleted else ""
    return f"{event.namespace}/{event.name}/{event.uid}/{event.revision}{suffix}"


class Publisher:
    """Publishes FenceChanged events on `lazyload.fence.<ns>.<name>`."""

    def __init__(self, js: JetStreamContext, *, replicas: int = 1) -> None:
        self.js = js
        self.replicas = replicas
        """Replicas of LAZYLOAD_FENCES when a publish finds it deleted and creates it again."""

    async def publish(self, event: events.FenceChanged) -> None:
        await jetstream.publish(
            self.js,
            subjects.fence(event.namespace, event.name),
            event,
            msg_id=message_id(event),
            replicas=self.replicas,
        )
        metrics.PUBLISHED.labels("deleted" if event.deleted else "changed").inc()
        log.info(
            "published fence %s/%s revision %d (%d hosts, +%d -%d%s)",
            event.namespace,
            event.name,
            event.revision,
            len(event.hosts),
            len(event.added),
            len(event.removed),
            ", deleted" if event.deleted else "",
        )

    async def last_events(
        self, *, batch: int = 1000, timeout: float = 5.0
    ) -> list[events.FenceChanged]:
        """The last FenceChanged of every fence subject in the stream (one pass of
        `jetstream.last_per_subject`: a few round trips for 10,000 fences, where one
        `get_last_msg` per subject cost seconds of the cold start at that size)."""
        latest: dict[str, events.FenceChanged] = {}
        for msg in await jetstream.last_per_subject(
            self.js,
            subjects.FENCES_STREAM,
            f"{subjects.FENCE_PREFIX}.>",
            batch=batch,
            timeout=timeout,
        ):
            try:
                event = codec.decode_as(msg.data or b"", events.FenceChanged)
            except errors.DecodeError as e:
                log.warning("unreadable last event on %s: %s", msg.subject, e)
                continue
            if not usable(event):  # its names would reach API paths unescaped
                log.warning("ignoring the last event on %s: not a fence's names", msg.subject)
                continue
            latest[msg.subject] = event
        return [latest[subject] for subject in sorted(latest)]
