"""GitOps sink: one deterministic YAML file per Sidecar, with the API sink's rules.

Covers: a fence becomes `<dir>/<ns>/<name>.yaml` whose content is the validated render (sorted
keys, same bytes for the same Sidecar); an unchanged Sidecar is not rewritten; changed hosts
rewrite it; a disabled fence removes the file; a hand-written file without lazyload's label is
never overwritten; an older revision never replaces a newer one; listing returns managed files.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from lazyload_sidecar_writer import gitops, rendering

from .conftest import make_fence, make_settings


async def _apply(sink: gitops.FileSink, **fence: object) -> str:
    event = make_fence(**fence)
    desired = None
    if event.enabled and not event.deleted:
        desired = rendering.render(event, make_settings())
    return (await sink.apply(event, desired)).action


async def test_file_per_sidecar_is_deterministic(tmp_path: Path) -> None:
    sink = gitops.FileSink(tmp_path)
    assert await sink.probe()
    assert await _apply(sink, revision=1) == "applied"
    target = tmp_path / "default" / "productpage.yaml"
    text = target.read_text()
    assert yaml.safe_load(text) == rendering.render(make_fence(revision=1), make_settings())
    assert text == gitops.dump(rendering.render(make_fence(revision=1), make_settings()))
    assert text.index("apiVersion") < text.index("kind") < text.index("metadata")
    assert [o["metadata"]["name"] for o in await sink.list_managed()] == ["productpage"]


async def test_unchanged_is_not_rewritten_changed_is(tmp_path: Path) -> None:
    sink = gitops.FileSink(tmp_path)
    await _apply(sink, revision=1)
    target = tmp_path / "default" / "productpage.yaml"
    mtime = target.stat().st_mtime_ns
    assert await _apply(sink, revision=2) == "unchanged"
    assert target.stat().st_mtime_ns == mtime
    assert await _apply(sink, revision=3, hosts=["x.y.svc.cluster.local"]) == "applied"
    assert "*/x.y.svc.cluster.local" in target.read_text()
    assert await _apply(sink, revision=2) == "stale"


async def test_disabled_fence_removes_file(tmp_path: Path) -> None:
    sink = gitops.FileSink(tmp_path)
    await _apply(sink, revision=1)
    assert await _apply(sink, revision=2, enabled=False) == "deleted"
    assert not (tmp_path / "default" / "productpage.yaml").exists()
    assert await _apply(sink, revision=3, deleted=True) == "deleted"


async def test_hand_written_file_is_not_overwritten(tmp_path: Path) -> None:
    target = tmp_path / "default" / "productpage.yaml"
    target.parent.mkdir(parents=True)
    target.write_text("kind: Sidecar\nmetadata: {name: productpage}\n")
    sink = gitops.FileSink(tmp_path)
    assert await _apply(sink) == "conflict"
    assert await _apply(sink, enabled=False) == "conflict"
    assert target.read_text() == "kind: Sidecar\nmetadata: {name: productpage}\n"
    assert await sink.list_managed() == []
