"""`lazyload events watch [--kind fence|sidecar|dlq] [-n ns]`: the event topics as readable lines.

A plain NATS subscriber, as any tool would be one: `lazyload.fence.<ns>.>` (the fence-reconciler's
FenceChanged), `lazyload.sidecar.<ns>.>` (sidecar-writer's SidecarApplied) and `lazyload.dlq.>`
(dead letters, filtered by the namespace of the subject they came from). Live only (no replay).
On a stack with NATS authentication it connects as the `observer` identity of `endpoints.json`
(`access.nats_connect_options`), which may subscribe to the fence and sidecar topics (not to the
dead letters: `--kind dlq` then needs an identity that may, given by `--nats-creds`/`--nats-nkey`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import nats
from lazyload_common import codec, events, subjects

KINDS = ("fence", "sidecar", "dlq")
_PREFIX = {
    "fence": subjects.FENCE_PREFIX,
    "sidecar": subjects.SIDECAR_PREFIX,
    "dlq": subjects.DLQ_PREFIX,
}


def subjects_of(kinds: list[str], namespace: str | None) -> list[str]:
    """The subjects to subscribe to (dead letters are filtered by namespace after decoding)."""
    out = []
    for kind in kinds:
        if namespace and kind != "dlq":
            token = subjects.fence(namespace, "x").split(".")[2]
            out.append(f"{_PREFIX[kind]}.{token}.>")
        else:
            out.append(f"{_PREFIX[kind]}.>")
    return out


def line(event: Any, subject: str) -> str:
    """One readable line of an event."""
    at = _time(_when(event))
    if isinstance(event, events.FenceChanged):
        what = "deleted" if event.deleted else ("enabled" if event.enabled else "disabled")
        changes = " ".join([*(f"+{h}" for h in event.added), *(f"-{h}" for h in event.removed)])
        return (
            f"{at} fence   {event.namespace}/{event.name} rev {event.revision} {what}, "
            f"{len(event.hosts)} hosts" + (f": {changes}" if changes else "")
        )
    if isinstance(event, events.SidecarApplied):
        text = (
            f"{at} sidecar {event.namespace}/{event.name} rev {event.revision} {event.action}, "
            f"{len(event.egress_hosts)} egress hosts"
        )
        return text + (f": {event.message}" if event.message else "")
    if isinstance(event, events.DeadLetter):
        return f"{at} dlq     {event.service}: {event.reason} (from {event.subject or subject})"
    return f"{at} {subject}: {event!r}"


def as_json(event: Any, subject: str) -> str:
    body = event.model_dump(mode="json", exclude={"payload"})
    return json.dumps({"subject": subject, **body}, sort_keys=True)


def _when(event: Any) -> float:
    for name in ("changed_at", "applied_at", "at", "observed_at"):
        value = getattr(event, name, None)
        if isinstance(value, int | float):
            return float(value)
    return time.time()


def _time(unix: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix))


def _in_namespace(event: Any, namespace: str | None) -> bool:
    if not namespace or not isinstance(event, events.DeadLetter):
        return True
    parts = event.subject.split(".")
    return len(parts) > 2 and parts[2] == namespace.replace(".", "_")


async def watch(
    options: dict[str, Any],
    kinds: list[str],
    namespace: str | None,
    emit: Callable[[str], None],
    *,
    as_json_lines: bool = False,
    count: int = 0,
    timeout: float = 0.0,
    ready: Callable[[], None] | None = None,
) -> int:
    """Print the events of `kinds` until `count` were printed or `timeout` seconds passed (0:
    forever); the number printed. A payload that does not decode is printed as such, never fatal.
    `ready` is called once the subscriptions are in place."""
    done = asyncio.Event()
    printed = 0
    errors: list[Exception] = []

    async def on_error(e: Exception) -> None:
        errors.append(e)
        done.set()

    nc = await nats.connect(
        **options, connect_timeout=5, max_reconnect_attempts=-1, error_cb=on_error
    )

    async def on_message(msg: Any) -> None:
        nonlocal printed
        try:
            event = codec.decode(msg.data)
        except Exception as e:
            emit(f"{_time(time.time())} {msg.subject}: undecodable payload ({e})")
            return
        if not _in_namespace(event, namespace):
            return
        emit(as_json(event, msg.subject) if as_json_lines else line(event, msg.subject))
        printed += 1
        if count and printed >= count:
            done.set()

    try:
        for subject in subjects_of(kinds, namespace):
            await nc.subscribe(subject, cb=on_message)
        await nc.flush()
        if ready is not None:
            ready()
        try:
            async with asyncio.timeout(timeout or None):
                await done.wait()
        except TimeoutError:
            pass
        if errors:
            raise errors[0]
    finally:
        await nc.close()
    return printed
