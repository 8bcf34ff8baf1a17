# Type stub of the compiled decoder (_wire.pyx, built by setup.py): what parsing.py calls.
from typing import Any

HTTP: int
TCP: int

def outline(raw: bytes) -> tuple[bytes | None, int, int]: ...
def keys(
    raw: bytes, kind: int, begin: int, direction: bool
) -> tuple[int, dict[Any, Any], dict[Any, int]]: ...
