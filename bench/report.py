"""The summary table (stdout) and bench/REPORT.md, from the results dict.

A benchmark run against the real API server (`--kube real`) is kept under `<name>_real`
(`result_key`); its rows are labelled with that key, and REPORT.md puts it beside the emulator's
`<name>` (`comparison`)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

Row = tuple[str, str, str]

KUBE_MODES = ("emulator", "real")
# Benchmarks whose stack has a Kubernetes API (the others have none): the emulator unless the
# result says `kube`.
USES_KUBE = frozenset({"convergence", "storm", "scale", "scaleout"})

MODULES = {
    "savings": "bench.savings",
    "convergence": "bench.convergence",
    "storm": "bench.storm",
    "scale": "bench.scale",
    "scaleout": "bench.scaleout",
    "mesh_convergence": "bench.mesh_convergence",
    "mesh_savings": "bench.mesh_savings",
    "first_calls": "bench.first_calls",
    "faults": "bench.faults",
    "soak": "bench.soak",
}


def result_key(name: str, kube: str) -> str:
    """Where a run of benchmark `name` against `kube` is kept in results.json."""
    return name if kube == "emulator" else f"{name}_{kube}"


def split_key(key: str) -> tuple[str, str]:
    """`scale_real` -> ("scale", "real"); `scale` -> ("scale", "emulator")."""
    for kube in KUBE_MODES[1:]:
        suffix = f"_{kube}"
        if key.endswith(suffix) and key[: -len(suffix)] in MODULES:
            return key[: -len(suffix)], kube
    return key, "emulator"


def kube_of(key: str, result: dict[str, Any]) -> str | None:
    """The API server a result was measured against; None for a benchmark without one."""
    bench, kube = split_key(key)
    if isinstance(result, dict) and result.get("kube"):
        return str(result["kube"])
    return kube if bench in USES_KUBE else None


def _module_rows(key: str, result: dict[str, Any]) -> list[Row]:
    bench, _ = split_key(key)
    rows = importlib.import_module(MODULES[bench]).rows(result)
    return [(key, metric, value) for _, metric, value in rows]


def table(results: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for name, result in results["benchmarks"].items():
        if "error" in result:
            rows.append((name, "ERROR", str(result["error"])[:120]))
            continue
        if result.get("reduced"):
            rows.append((name, "configuration", "REDUCED " + _config(result)))
        if split_key(name)[0] in MODULES:
            rows.extend(_module_rows(name, result))
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


def comparison(results: dict[str, Any]) -> list[str]:
    """Markdown: each benchmark measured on both API servers, its rows side by side (matched by
    metric); [] when no benchmark has both."""
    benchmarks = results["benchmarks"]
    lines: list[str] = []
    for name in MODULES:
        real = result_key(name, "real")
        pair = benchmarks.get(name), benchmarks.get(real)
        if not all(isinstance(r, dict) and "error" not in r for r in pair):
            continue
        emulator_rows = _module_rows(name, pair[0] or {})
        real_rows = {metric: value for _, metric, value in _module_rows(real, pair[1] or {})}
        if not lines:
            lines = [
                "## API emulator vs real kube-apiserver",
                "",
                "The same benchmark against the project's API emulator (`python -m bench`) and "
                "against etcd + kube-apiserver + kube-controller-manager (`python -m bench --kube "
                "real`); see each run's notes for how writes were counted.",
                "",
                "| benchmark | metric | emulator | real kube-apiserver |",
                "|---|---|---|---|",
            ]
        seen = set()
        for _, metric, value in emulator_rows:
            seen.add(metric)
            other = real_rows.get(metric, "-")
            lines.append(
                f"| {name} | {metric} | {value.replace('|', '/')} | {other.replace('|', '/')} |"
            )
        for metric, value in real_rows.items():
            if metric not in seen:
                lines.append(f"| {name} | {metric} | - | {value.replace('|', '/')} |")
        lines.append(
            f"| {name} | run (wall, CPU) | {_run(pair[0] or {})} | {_run(pair[1] or {})} |"
        )
    return [*lines, ""] if lines else []


def _run(result: dict[str, Any]) -> str:
    machine = result.get("machine") or {}
    return (
        f"{result.get('from_run') or 'this run'} ({result.get('wall_s', '?')} s, "
        f"{machine.get('cpu_model') or 'CPU not recorded'})"
    )


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
        "| benchmark | Kubernetes API | configuration | full? | `--set` overrides | run |",
        "|---|---|---|---|---|---|",
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
        bench, _ = split_key(name)
        sets = " ".join(
            f"--set {bench}.{k}={v}"
            for k, v in (result.get("config") or {}).items()
            if k in full and full[k] != v
        )
        lines.append(
            f"| {name} | {kube_of(name, result) or '-'} | {_config(result)} | {status} | "
            f"{f'`{sets}`' if sets else 'none'} | {result.get('from_run') or 'this run'} |"
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
        + (f" --kube {results['kube']}" if results.get("kube", "emulator") != "emulator" else "")
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
        f"(load average at start {m['load_avg_at_start']}): the last run's; results merged from "
        "earlier runs keep their own (`machine` in results.json, and the 'run' rows below).",
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
    lines += comparison(results)
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


HISTORY_HEADING = "## History"
"""REPORT.md's last section, written by hand: figures of earlier runs and what changed them (the
services' READMEs point here). A run keeps it (`with_history`)."""


def with_history(generated: str, previous: Path) -> str:
    """`generated`, followed by the history section of the REPORT.md it replaces (from the line
    `HISTORY_HEADING` to the end), so that a new run never drops the figures kept there."""
    try:
        old = previous.read_text()
    except FileNotFoundError:
        return generated
    lines = old.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == HISTORY_HEADING), None)
    if start is None:
        return generated
    return generated.rstrip("\n") + "\n\n" + "".join(lines[start:])
