"""Errors of sidecar-writer, typed by what the consume loop must do with the fence event.

- `Unrenderable`: the fence has no usable workload selector; not a bug, reported as a conflict.
- `InvalidSidecar`: the rendered Sidecar fails Istio's schema or the host rules; a bug upstream
  or here, so the event is dead-lettered and nothing is written.
- `RetriesExhausted`: the API kept failing with 409/429/5xx; JetStream redelivers later.
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
    """The API server refused the Sidecar (400/415/422): retrying cannot help."""
