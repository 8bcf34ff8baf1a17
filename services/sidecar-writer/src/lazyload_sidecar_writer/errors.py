"""Errors of sidecar-writer, typed by what the consume loop must do with the fence event.

- `Unrenderable`: the fence has no usable workload selector; not a bug, reported as a conflict.
- `InvalidSidecar`: the rendered Sidecar fails Istio's schema or the host rules; a bug upstream
  or here, so the event is dead-lettered and nothing is written.
- `RetriesExhausted`: the API kept failing with 409/429/5xx; JetStream redelivers later.
- `Denied`: 401/403; JetStream redelivers later (with back-off, up to `max_deliver`).
- `Refused`: an event the writer must not act on at all (invalid fields, a namespace lazyload
  does not manage, a ServiceFence that does not exist or has another uid): dead-lettered and
  counted, with no write, no report on the fence and no `SidecarApplied`.
"""

from __future__ import annotations

from lazyload_common import errors


class Unrenderable(errors.LazyloadError):
    """The fence cannot become a Sidecar (no workload selector)."""


class InvalidSidecar(errors.PermanentError):
    """A rendered Sidecar that must never be applied."""


class RetriesExhausted(errors.TemporaryError):
    """The API failed on every attempt; the fence event is redelivered after `delay`."""


class ApiRejected(errors.PermanentError):
    """The API server refused the Sidecar (400/413/415/422): retrying cannot help."""


class Denied(errors.TemporaryError):
    """401/403: RBAC or credentials refused the call. They change (a Role re-applied, a token
    rotated), so the fence event is redelivered after `delay` with the consume loop's back-off,
    and dead-lettered only after `sidecar.max_deliver` deliveries."""


class Refused(errors.PermanentError):
    """The writer must not act on this fence event; `reason` is the metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
