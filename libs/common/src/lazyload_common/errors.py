"""Typed errors shared by every service.

Retry meaning is typed: a handler raises `PermanentError` for input that will never succeed (the
message is dead-lettered and terminated) or `TemporaryError` for a failure worth retrying later (the
message is nak'ed with a delay). Anything else is treated as temporary.
"""

from __future__ import annotations


class LazyloadError(Exception):
    """Base of every error raised by lazyload code."""


class ConfigError(LazyloadError, ValueError):
    """Settings that cannot work, found at start-up before any connection is opened."""


class DecodeError(LazyloadError, ValueError):
    """A payload that is not a valid lazyload event (bad msgpack, unknown kind or schema)."""


class PermanentError(LazyloadError):
    """Processing can never succeed for this input: dead-letter it and move on."""


class TemporaryError(LazyloadError):
    """Processing failed for now: retry after `delay` seconds."""

    def __init__(self, message: str, *, delay: float = 1.0) -> None:
        super().__init__(message)
        self.delay = delay
