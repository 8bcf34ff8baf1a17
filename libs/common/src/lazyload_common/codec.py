"""msgpack codec of lazyload events: `encode(event) -> bytes`, `decode(bytes) -> event`.

`decode` never raises anything but `DecodeError`, so a consumer can dead-letter a bad payload and go
on with the next one.
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

import msgpack
from pydantic import BaseModel, ValidationError

from lazyload_common import errors, events

E = TypeVar("E", bound=BaseModel)


def encode(event: BaseModel) -> bytes:
    """Serialise an event model to msgpack (declared fields only)."""
    return cast(bytes, msgpack.packb(event.model_dump(mode="python"), use_bin_type=True))


def encode_with(event: BaseModel, **updates: Any) -> bytes:
    """`encode(event.model_copy(update=updates))` without copying or dumping the model, for an
    event whose fields are all plain values (str, int, float, bool, None: `DependencyObserved`),
    as `model_dump` would give them. The updates are not validated: the caller's own values (the
    ingest's hot path sets a prototype's times per sighting)."""
    return cast(bytes, msgpack.packb({**event.__dict__, **updates}, use_bin_type=True))


def decode(payload: bytes) -> events.AnyEvent:
    """Decode any lazyload event; raise `DecodeError` with the reason if it is not one."""
    try:
        raw = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except Exception as e:  # msgpack raises several unrelated types on garbage
        raise errors.DecodeError(f"not msgpack: {e}") from e
    if not isinstance(raw, dict):
        raise errors.DecodeError(f"not an event map: {type(raw).__name__}")
    try:
        return events.EVENT_ADAPTER.validate_python(raw)
    except ValidationError as e:
        raise errors.DecodeError(
            f"invalid event: {e.error_count()} error(s): {e.errors()[:3]}"
        ) from e


def decode_as(payload: bytes, model: type[E]) -> E:
    """Decode and check the event is of the expected model."""
    event = decode(payload)
    if not isinstance(event, model):
        raise errors.DecodeError(f"expected {model.__name__}, got {type(event).__name__}")
    return event
