"""The service READMEs stay what a newcomer needs (issue 18): every module of the service's
package named, its settings and its events (or that it has none) each in a section."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVICES = sorted(p.parent for p in (ROOT / "services").glob("*/README.md"))


@pytest.mark.parametrize("service", SERVICES, ids=[s.name for s in SERVICES])
def test_the_readme_names_every_module_its_settings_and_its_events(service: Path) -> None:
    readme = (service / "README.md").read_text()
    package = service / "src" / f"lazyload_{service.name.replace('-', '_')}"
    modules = sorted(
        p.stem for p in [*package.glob("*.py"), *package.glob("*.pyx")] if p.stem != "__init__"
    )
    assert modules, package
    named = set(re.findall(r"`([a-z_]+)(?:\.pyx?)?`", readme))
    assert [m for m in modules if m not in named] == [], f"{service.name}/README.md"
    headings = [line.lower() for line in readme.splitlines() if line.startswith("## ")]
    assert any("settings" in h for h in headings), headings
    assert any("event" in h for h in headings) or "has no NATS events" in readme, headings
