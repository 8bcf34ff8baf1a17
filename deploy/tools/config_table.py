"""Generate the configuration table of README.md from the services' settings models.

    .venv/bin/python deploy/tools/config_table.py            # print the tables
    .venv/bin/python deploy/tools/config_table.py --write    # rewrite them in README.md
    .venv/bin/python deploy/tools/config_table.py --check    # exit 1 when README.md drifted

The tables sit between `<!-- config-table:begin -->` and `<!-- config-table:end -->`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import settings_catalog as catalog

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "README.md"
BEGIN = "<!-- config-table:begin -->"
END = "<!-- config-table:end -->"


def _default(value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, (list, tuple)):
        return f"`{json.dumps(list(value))}`"
    if value == "(computed)":
        return "computed"
    if value == "":
        return "empty"
    return f"`{value}`"


def _cell(text: str) -> str:
    return " ".join(text.replace("|", "\\|").split())


def table() -> str:
    """Markdown: one table of the shared settings, then one per service of its own."""
    per_service = {name: catalog.settings(name) for name in catalog.SERVICES}
    counts: dict[str, int] = {}
    for found in per_service.values():
        for s in found:
            counts[s.env] = counts.get(s.env, 0) + 1
    shared: dict[str, catalog.Setting] = {}
    for found in per_service.values():
        for s in found:
            if counts[s.env] > 1:
                shared.setdefault(s.env, s)
    lines = [
        "#### Shared settings (every service that uses the group)",
        "",
        "| variable | default | used by | meaning |",
        "|---|---|---|---|",
    ]
    for env, s in sorted(shared.items()):
        users = ", ".join(n for n, found in per_service.items() if env in {x.env for x in found})
        lines.append(f"| `{env}` | {_default(s.default)} | {users} | {_cell(s.description)} |")
    for name, found in per_service.items():
        own = [s for s in found if counts[s.env] == 1]
        lines += [
            "",
            f"#### {name} (`{catalog.SERVICES[name][2]}`)",
            "",
            "| variable | default | meaning |",
            "|---|---|---|",
        ]
        lines += [f"| `{s.env}` | {_default(s.default)} | {_cell(s.description)} |" for s in own]
    return "\n".join(lines) + "\n"


def current(doc: str) -> str:
    start, end = doc.index(BEGIN) + len(BEGIN), doc.index(END)
    return doc[start:end].strip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite README.md")
    parser.add_argument("--check", action="store_true", help="fail when README.md drifted")
    args = parser.parse_args(argv)
    generated = table()
    if args.write:
        doc = DOC.read_text()
        start, end = doc.index(BEGIN) + len(BEGIN), doc.index(END)
        DOC.write_text(doc[:start] + "\n" + generated + doc[end:])
        return 0
    if args.check:
        if current(DOC.read_text()) != generated:
            print(f"{DOC} is out of date: run {Path(__file__).name} --write", file=sys.stderr)
            return 1
        return 0
    sys.stdout.write(generated)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
