"""Errors of global-pilot, on the shared `LazyloadError` base."""

from __future__ import annotations

from lazyload_common import errors


class GlobalPilotError(errors.LazyloadError):
    """Base of global-pilot's own errors."""


class InconsistentSnapshotError(GlobalPilotError, ValueError):
    """A snapshot referencing names it does not hold, or holding names nothing references."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("inconsistent snapshot: " + "; ".join(problems))
        self.problems = problems


class InvalidResourceError(GlobalPilotError, ValueError):
    """A rendered Kubernetes/Istio object that does not match its schema."""
