"""Reading CustomResourceDefinition documents from YAML/JSON files in directories."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)
SUFFIXES = (".yaml", ".yml", ".json")


def manifest_files(directory: Path) -> list[Path]:
    """The manifest files directly in directory (not below it), sorted by name."""
    return sorted(p for p in Path(directory).iterdir() if p.is_file() and p.suffix in SUFFIXES)


def crd_documents(directories: Iterable[Path]) -> Iterator[dict[str, Any]]:
    """Every CustomResourceDefinition document of every manifest in the directories."""
    for directory in directories:
        for path in manifest_files(Path(directory)):
            with path.open(encoding="utf-8") as handle:
                for doc in yaml.safe_load_all(handle):
                    if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                        yield doc
                    elif doc:
                        log.info("skipping a non-CRD document in %s", path)
