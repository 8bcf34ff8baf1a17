"""The summary table (stdout) and bench/REPORT.md, from the results dict."""

from __future__ import annotations

import importlib
from typing import Any

Row = tuple[str, str, str]

MODULES = {
    "savings": "bench.savings",
    "convergence": "bench.convergence",
    "storm": "bench.storm",
    "scale": "bench.scale",
}


def table(results: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for name, result in results["benchmarks"].items():
        if "error" in result:
            rows.append((name, "ERROR", str(result["error"])[:120]))
            continue
        if name in MODULES:
            rows.extend(importlib.import_module(MODULES[name]).rows(result))
        else:  # bench/ingest (owned elsewhere): its top-level scalars
            for key, value in result.items():
                if isinstance(value, int | float | str | bool):
                    rows.append((name, key, _fmt(value)))
    return rows


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def render_table(rows: list[Row]) -> str:
    header = ("benchmark", "metric", "value")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    line = "  ".join("-" * w for w in widths)
    out = [line, "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)), line]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    out.append(line)
    return "\n".join(out)


def markdown(results: dict[str, Any], rows: list[Row]) -> str:
    m = results["machine"]
    lines = [
        "# lazyload benchmarks",
        "",
        f"Configuration: **{results['configuration']}** (`python -m bench"
        + (" --small" if results["configuration"] == "small" else "")
        + f"`), run {results['started_at']} - {results.get('finished_at', '?')}.",
        "",
        f"Machine: {m['cpu_model']}, {m['logical_cores']} logical / {m['physical_cores']} physical "
        f"cores, {m['ram_gb']} GB RAM, {m['os']}, Python {m['python']}, Envoy {m['envoy']} "
        f"(load average at start {m['load_avg_at_start']}).",
        "",
        "Absolute times are indications only on a shared machine; each benchmark also reports a "
        "ratio against a reference measured in the same run.",
        "",
        "| benchmark | metric | value |",
        "|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c.replace('|', '/')} |" for a, b, c in rows]
    lines.append("")
    for name, result in results["benchmarks"].items():
        notes = result.get("notes") if isinstance(result, dict) else None
        plots = results.get("plots", {}).get(name, [])
        if not notes and not plots:
            continue
        lines += [f"## {name}", ""]
        if notes:
            lines += [*notes, ""]
        lines += [f"![{name}](plots/{p})" for p in plots]
        lines.append("")
    return "\n".join(lines)
