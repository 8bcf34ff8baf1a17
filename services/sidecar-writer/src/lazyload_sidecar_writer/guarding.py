"""The writer acts only on fences that exist: before a Sidecar is written for a fence event, the
ServiceFence it names is read, and it must exist with the event's uid.

A fence event is only the word of whoever could publish on `lazyload.fence.>`; the ServiceFence
is what the reconciler (or a user) really wrote. An event for a fence that does not exist, or for
another incarnation of it (a different uid, an event without one), is refused: no Sidecar, the
event dead-lettered and counted (`errors.Refused`). Deleting is never refused this way: the
Sidecar of a deleted fence has to go.

Cheap: an incarnation that was found is remembered (bounded, LRU) and costs no further read; it
is forgotten when its fence is deleted. A failed read (401/403, 429, 5xx, network) is retried
later, after the delay `lazyload_common.kube` gives the error (RBAC and credentials change: up to
`sidecar.max_deliver` deliveries); a read the API refuses as malformed dead-letters the event.
"""

from __future__ import annotations

from lazyload_common import errors, events, kube

from lazyload_sidecar_writer import errors as writer_errors
from lazyload_sidecar_writer.applying import KubeSink
from lazyload_sidecar_writer.bounded import Lru
from lazyload_sidecar_writer.reporting import fence_path


class FenceGuard:
    """Checks that the ServiceFence of an event exists with the event's uid (see module)."""

    def __init__(self, sink: KubeSink, *, limit: int = 10000) -> None:
        self.sink = sink
        self._known: Lru[tuple[str, str], str] = Lru(limit)

    async def check(self, event: events.FenceChanged) -> None:
        """Return when the fence exists with `event.uid`; raise `Refused` when it does not,
        `TemporaryError` when the API could not tell."""
        key = (event.namespace, event.name)
        if event.uid and self._known.get(key) == event.uid:
            return
        fence = f"{event.namespace}/{event.name}"
        try:
            stored = await self.sink.call(
                self.sink.api.get, fence_path(event.namespace, event.name), missing_ok=True
            )
        except kube.KubeNotFound:
            raise writer_errors.Refused(
                "unknown-fence", f"no ServiceFence {fence}: no Sidecar for it"
            ) from None
        except kube.KubeUnprocessable as e:
            raise writer_errors.ApiRejected(f"ServiceFence {fence} cannot be read: {e}") from e
        except kube.KubeError as e:  # 401/403 (RBAC changes), 429, 5xx, no answer: later
            raise errors.TemporaryError(f"ServiceFence {fence} not read: {e}", delay=e.delay) from e
        uid = str((stored.get("metadata") or {}).get("uid") or "")
        if not event.uid or uid != event.uid:
            raise writer_errors.Refused(
                "uid-mismatch",
                f"ServiceFence {fence} has uid {uid!r}, the event {event.uid!r}: no Sidecar",
            )
        self._known.set(key, uid)

    def forget(self, event: events.FenceChanged) -> None:
        """The fence is deleted: its next incarnation is read again."""
        self._known.pop((event.namespace, event.name))
