"""GitOps sink: one deterministic YAML file per Sidecar, `<dir>/<namespace>/<name>.yaml`.

Instead of the API, Sidecars go into a directory that a GitOps tool (Argo CD, Flux) syncs from a
repository. The same rules as the API sink hold (`planning.plan`): a file without lazyload's
managed-by label is never overwritten, an older revision never replaces a newer one, and an
unchanged Sidecar is not rewritten. Files are written atomically (temporary file, then rename),
with sorted keys, so the same Sidecar always gives the same bytes and a clean diff.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

import yaml
from lazyload_common import events

from lazyload_sidecar_writer import planning, rendering
from lazyload_sidecar_writer.rendering import RawObject
from lazyload_sidecar_writer.sinks import Result


def dump(sidecar: RawObject) -> str:
    """The file content of a Sidecar: block YAML, sorted keys, no server-side fields."""
    clean = dict(sidecar)
    clean["metadata"] = {
        k: v for k, v in sidecar.get("metadata", {}).items() if k not in ("resourceVersion", "uid")
    }
    clean.pop("status", None)
    return yaml.safe_dump(clean, sort_keys=True, default_flow_style=False, allow_unicode=True)


class FileSink:
    """Writes Sidecars as files under `root` (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def file(self, namespace: str, name: str) -> Path:
        return self.root / namespace / f"{name}.yaml"

    async def apply(self, event: events.FenceChanged, desired: RawObject | None) -> Result:
        return await asyncio.to_thread(self._apply, event, desired)

    def _apply(self, event: events.FenceChanged, desired: RawObject | None) -> Result:
        target = self.file(event.namespace, event.name)
        current = self._read(target)
        decision = planning.plan(event, desired, current, track_revision=False)
        if decision.action in ("create", "replace"):
            assert desired is not None
            _write_atomic(target, dump(desired))
            return Result("applied", write=decision.action)
        if decision.action == "delete":
            target.unlink(missing_ok=True)
            return Result("deleted", write="delete")
        if decision.action == "absent":
            return Result("deleted", message=decision.message)
        return Result(decision.action, message=decision.message)

    async def list_managed(self) -> list[RawObject]:
        return await asyncio.to_thread(self._list_managed)

    def forget(self, namespace: str, name: str) -> None:
        """Nothing is remembered: every apply reads the file."""

    def _list_managed(self) -> list[RawObject]:
        found = [self._read(p) for p in sorted(self.root.glob("*/*.yaml"))]
        return [obj for obj in found if obj is not None and rendering.is_managed(obj)]

    async def probe(self) -> bool:
        """The directory exists (or can be made) and is writable."""

        def check() -> bool:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError:
                return False
            return os.access(self.root, os.W_OK)

        return await asyncio.to_thread(check)

    @staticmethod
    def _read(target: Path) -> RawObject | None:
        try:
            loaded = yaml.safe_load(target.read_text())
        except FileNotFoundError:
            return None
        except yaml.YAMLError:
            loaded = None
        # A file that is not a mapping is someone else's: never overwritten (no managed label).
        return loaded if isinstance(loaded, dict) else {"metadata": {}}


def _write_atomic(target: Path, text: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
