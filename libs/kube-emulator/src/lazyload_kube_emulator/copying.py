"""Deep copies of stored objects: every read and write of the emulator copies, so copying is hot."""

from __future__ import annotations

import copy
from typing import Any

import msgpack


def clone(value: Any) -> Any:
    """A deep copy of JSON data (dicts, lists, strings, numbers, booleans, None) through msgpack,
    several times faster than `copy.deepcopy`; anything msgpack cannot carry is deep-copied."""
    try:
        return msgpack.unpackb(msgpack.packb(value), strict_map_key=False)
    except (TypeError, ValueError, OverflowError):
        return copy.deepcopy(value)
