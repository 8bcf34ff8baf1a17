"""Saving and restoring the emulator's objects to a JSON state file."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .emulator import Emulator


def save(emulator: Emulator, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"objects": emulator.snapshot()}, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def load(emulator: Emulator, path: Path) -> int:
    """Restore the objects of a state file (if it exists); returns how many were read."""
    if not path.exists():
        return 0
    objects = json.loads(path.read_text(encoding="utf-8")).get("objects", [])
    emulator.restore(objects)
    return len(objects)
