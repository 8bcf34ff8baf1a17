"""README.md's configuration table and the generated files cannot drift from the code; the
operations docs (troubleshooting, upgrade) name only commands, metrics and docs that exist."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from deploy_support import CHART, ROOT, tool


def test_config_table_is_generated_from_the_settings_models() -> None:
    config_table = tool("config_table")
    committed = config_table.current((ROOT / "README.md").read_text())
    assert committed == config_table.table(), "run deploy/tools/config_table.py --write"


def test_values_schema_is_generated() -> None:
    values_schema = tool("values_schema")
    assert (CHART / "values.schema.json").read_text() == values_schema.text(), (
        "run deploy/tools/values_schema.py"
    )


def test_every_setting_appears_in_the_table() -> None:
    catalog = tool("settings_catalog")
    table = tool("config_table").table()
    for service in catalog.SERVICES:
        for name in catalog.env_names(service):
            assert f"`{name}`" in table


def test_chart_crd_is_a_copy_of_deploy_crds() -> None:
    assert (CHART / "crds" / "servicefence.yaml").read_bytes() == (
        ROOT / "deploy" / "crds" / "servicefence.yaml"
    ).read_bytes(), "copy deploy/crds/servicefence.yaml to deploy/helm/lazyload/crds/"


OPERATIONS_DOCS = ("troubleshooting.md", "upgrade.md")


def _code(text: str) -> list[str]:
    """Lines of fenced code blocks and inline code spans."""
    blocks = re.findall(r"```\w*\n(.*?)```", text, re.S)
    spans = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    return [line.strip() for block in blocks for line in block.splitlines()] + spans


def test_operations_docs_name_commands_the_cli_has() -> None:
    commands: set[tuple[str, ...]] = set()
    for name in OPERATIONS_DOCS:
        for line in _code((ROOT / "docs" / name).read_text()):
            words = line.split()
            if words[:1] == ["lazyload"] and len(words) > 1:
                take = 3 if words[1] in ("fences", "events") else 2
                commands.add(tuple(words[1:take]))
    assert {("status",), ("explain",), ("events", "watch")} <= commands
    lazyload = Path(sys.executable).parent / "lazyload"
    for command in sorted(commands):
        result = subprocess.run(
            [str(lazyload), *command, "--help"], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, f"lazyload {' '.join(command)}: {result.stderr}"


def test_operations_docs_name_exported_metrics_and_existing_docs() -> None:
    defined: set[str] = set()
    for source in [*ROOT.glob("services/*/src/**/*.py"), *ROOT.glob("libs/common/src/**/*.py")]:
        defined.update(re.findall(r'"(lazyload_[a-z_]+)"', source.read_text()))
    for name in OPERATIONS_DOCS:
        text = (ROOT / "docs" / name).read_text()
        named = set(re.findall(r"\blazyload_[a-z_]+", text))
        assert named <= defined, f"{name}: {named - defined}"
        for link in re.findall(r"\]\(([\w./-]+\.md)(?:#[\w-]+)?\)", text):
            assert (ROOT / "docs" / link).is_file(), f"{name} links {link}"


def test_readme_draws_the_architecture_in_mermaid() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```mermaid\n(.*?)```", readme, re.S)
    assert len(blocks) == 1 and blocks[0].startswith("flowchart")
    for part in (
        "accesslog-ingest",
        "fence-reconciler",
        "sidecar-writer",
        "global-pilot",
        "global-sidecar",
        "NATS JetStream",
        "Kubernetes API",
        "istiod",
    ):
        assert part in blocks[0], part
    edges = re.findall(r"^\s*(\w+) (?:-->|--.*?-->|-\..*?\.->) (\w+)$", blocks[0], re.M)
    nodes = set(re.findall(r"^\s*(\w+)[\[(]", blocks[0], re.M))
    assert len(edges) == blocks[0].count("->") and {n for edge in edges for n in edge} <= nodes
