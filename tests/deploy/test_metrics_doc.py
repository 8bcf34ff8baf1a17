"""Every metric docs/metrics.md names is one a service exports (defined in a service's or the
common library's source)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SUFFIXES = ("_bucket", "_count", "_sum")


def _defined() -> set[str]:
    names: set[str] = set()
    for source in [*ROOT.glob("services/*/src/**/*.py"), *ROOT.glob("libs/common/src/**/*.py")]:
        names.update(re.findall(r'"(lazyload_[a-z_]+)"', source.read_text()))
    return names


def test_every_documented_metric_is_exported() -> None:
    named = set(re.findall(r"\blazyload_[a-z_]+", (ROOT / "docs/metrics.md").read_text()))
    defined = _defined()
    assert len(named) >= 10
    unknown = set()
    for name in named:
        base = next((name[: -len(s)] for s in SUFFIXES if name.endswith(s)), name)
        if name not in defined and base not in defined:
            unknown.add(name)
    assert not unknown, f"docs/metrics.md names metrics no service exports: {sorted(unknown)}"
