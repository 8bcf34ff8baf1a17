"""Reading CustomResourceDefinition documents from YAML/JSON files in directories.

Parsed files are cached by (path, mtime, size): tests start many emulators with the same CRDs.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)
SUFFIXES = (".yaml", ".yml", ".json")
Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def manifest_files(directory: Path) -> list[Path]:
    """The manifest files directly in directory (not below it), sorted by name."""
    return sorted(p for p in Path(directory).iterdir() if p.is_file() and p.suffix in SUFFIXES)


@lru_cache(maxsize=128)
def _parse(path: Path, mtime_ns: int, size: int) -> tuple[Any, ...]:
    with path.open(encoding="utf-8") as handle:
        return tuple(yaml.load_all(handle, Loader=Loader))  # Loader is a safe loader


def documents(path: Path) -> list[Any]:
    """The YAML documents of one file (deep copies of a cached parse)."""
    stat = path.stat()
    return copy.deepcopy(list(_parse(path.resolve(), stat.st_mtime_ns, stat.st_size)))


def crd_documents(directories: Iterable[Path]) -> Iterator[dict[str, Any]]:
    """Every CustomResourceDefinition document of every manifest in the directories."""
    for directory in directories:
        for path in manifest_files(Path(directory)):
            for doc in documents(path):
                if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                    yield doc
                elif doc:
                    log.info("skipping a non-CRD document in %s", path)
