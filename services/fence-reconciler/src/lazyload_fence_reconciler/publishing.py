"""Fence events on JetStream: publish (awaited, deduplicated by id) and read back the last ones.

A FenceChanged is published only after the fence write it describes returned. Its `Nats-Msg-Id`
is `<ns>/<name>/<uid>/<revision>`, so a second publication of the same revision (by the other
replica, or after a restart) inside the stream's duplicate window is dropped by the server. The
last event per subject is what the reconciler compares with at start-up (`last_events`).
"""

from __future__ import annotations

import logging

from lazyload_common import codec, errors, events, jetstream, subjects
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from lazyload_fence_reconciler import metrics

log = logging.getLogger(__name__)


def message_id(event: events.FenceChanged) -> str:
    suffix = "/deleted" if event.deleted else ""
    return f"{event.namespace}/{event.name}/{event.uid}/{event.revision}{suffix}"


class Publisher:
    """Publishes FenceChanged events on `lazyload.fence.<ns>.<name>`."""

    def __init__(self, js: JetStreamContext) -> None:
        self.js = js

    async def publish(self, event: events.FenceChanged) -> None:
        await jetstream.publish(
            self.js, subjects.fence(event.namespace, event.name), event, msg_id=message_id(event)
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

    async def last_events(self) -> list[events.FenceChanged]:
        """The last FenceChanged of every fence subject in the stream."""
        info = await self.js.stream_info(subjects.FENCES_STREAM, subjects_filter=">")
        found: list[events.FenceChanged] = []
        for subject in sorted((info.state.subjects or {}) if info.state else {}):
            try:
                raw = await self.js.get_last_msg(subjects.FENCES_STREAM, subject)
            except NotFoundError:
                continue
            try:
                found.append(codec.decode_as(raw.data or b"", events.FenceChanged))
            except errors.DecodeError as e:
                log.warning("unreadable last event on %s: %s", subject, e)
        return found
