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
    "scaleout": "bench.scaleout",
}


def table(results: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for name, result in results["benchmarks"].items():
        if "error" in result:
            rows.append((name, "ERROR", str(result["error"])[:120]))
            continue
        if result.get("reduced"):
            rows.append((name, "configuration", "REDUCED " + _config(result)))
        if name in MODULES:
            rows.extend(importlib.import_module(MODULES[name]).rows(result))
        else:  # bench/ingest (owned elsewhere): its top-level scalars
            for key, value in result.items():
                if isinstance(value, int | float | str | bool):
                    rows.append((name, key, _fmt(value)))
    return rows


def _config(result: dict[str, Any]) -> str:
    """`key=value` of the configuration that ran, with the full value where it was reduced."""
    full = result.get("full_config") or {}
    parts = []
    for key, value in (result.get("config") or {}).items():
        if key in full and full[key] != value:
            parts.append(f"{key}={value} (full: {full[key]})")
        else:
            parts.append(f"{key}={value}")
    return ", ".join(parts)


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


def _configurations(results: dict[str, Any]) -> list[str]:
    """Per benchmark: the configuration it ran with, whether that is the full one, --set used."""
    lines = [
        "| benchmark | configuration | full? | `--set` overrides | run |",
        "|---|---|---|---|---|",
    ]
    for name, result in results["benchmarks"].items():
        if not isinstance(result, dict) or "config" not in result:
            continue
        if result.get("partial"):
            status = "**PARTIAL** (timed out)"
        elif result.get("reduced"):
            status = "**REDUCED**"
        elif "error" in result:
            status = "error"
        else:
            status = "full"
        full = result.get("full_config") or {}
        sets = " ".join(
            f"--set {name}.{k}={v}"
            for k, v in (result.get("config") or {}).items()
            if k in full and full[k] != v
        )
        lines.append(
            f"| {name} | {_config(result)} | {status} | {f'`{sets}`' if sets else 'none'} | "
            f"{result.get('from_run') or 'this run'} |"
        )
    sets = [
        f"--set {bench}.{key}={value}"
        for bench, fields in (results.get("overrides") or {}).items()
        for key, value in fields.items()
    ]
    lines += [
        "",
        "Overrides given to the last run: " + (f"`{' '.join(sets)}`" if sets else "none") + ".",
        "",
    ]
    return lines


def markdown(results: dict[str, Any], rows: list[Row]) -> str:
    m = results["machine"]
    lines = [
        "# lazyload benchmarks",
        "",
        f"Configuration: **{results['configuration']}** (`python -m bench"
        + (" --small" if results["configuration"] == "small" else "")
        + f"`), run {results['started_at']} - {results.get('finished_at', '?')}"
        + (
            f"; merged with earlier runs (`--merge`; previous results.json of {results['merged_from']}): the "
            "'run' column says which run each benchmark comes from."
            if results.get("merged_from")
            else "."
        ),
        "",
        f"Machine: {m['cpu_model']}, {m['logical_cores']} logical / {m['physical_cores']} physical "
        f"cores, {m['ram_gb']} GB RAM, {m['os']}, Python {m['python']}, Envoy {m['envoy']} "
        f"(load average at start {m['load_avg_at_start']}).",
        "",
        "Absolute times are indications only on a shared machine; each benchmark also reports a "
        "ratio against a reference measured in the same run.",
        "",
        *_configurations(results),
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
