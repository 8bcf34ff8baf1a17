"""`python -m bench [--small] [--only NAME ...] [--kube emulator|real]`: run the benchmarks, print a
table, write bench/results.json, bench/REPORT.md and PNG plots under bench/plots/.

`--kube real` runs the benchmarks that can (storm, scale, scaleout) against etcd +
kube-apiserver + kube-controller-manager instead of the API emulator; their results are kept
under `<name>_real` (e.g. `scale_real`) next to the emulator's `<name>`, each with a `kube` field,
and REPORT.md puts the two side by side. With `--merge` the other key stays.

`python -m bench faults [--small] [--only NAME ...]` (`make faults`) is the fault suite
(bench/faults.py): not one of the benchmarks above; it merges its result into results.json.
`python -m bench soak [--minutes 30]` (bench/soak.py) is the soak, merged the same way."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bench import common, report

HERE = Path(__file__).resolve().parent

# name -> (module, full configuration, small configuration). Order = priority.
BENCHMARKS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "savings": ("bench.savings", {"mesh_sizes": [1000, 5000]}, {"mesh_sizes": [20, 100]}),
    "convergence": ("bench.convergence", {"dependencies": 30}, {"dependencies": 3}),
    "storm": (
        "bench.storm",
        {"fences": 1000, "edges": 10_000, "raised_qps": 1000},
        {"fences": 20, "edges": 200},
    ),
    "scale": (
        "bench.scale",
        {"services": 10_000, "edges": 100_000, "kube_qps": 1000},
        {"services": 100, "edges": 1_000},
    ),
    "scaleout": (
        "bench.scaleout",
        {"fences": 1000, "edges": 10_000, "raised_qps": 1000},
        {"fences": 20, "edges": 200, "raised_qps": 1000},
    ),
    # the real-Istio rig (lazyload_testing.mesh: root and `make setup`'s Go-built binaries)
    "mesh_convergence": (
        "bench.mesh_convergence",
        {"dependencies": 100, "callers": 4},
        {"dependencies": 5, "callers": 2},
    ),
    "mesh_savings": (
        "bench.mesh_savings",
        {"mesh_sizes": [1000, 5000]},
        {"mesh_sizes": [100, 300]},
    ),
    "first_calls": (
        "bench.first_calls",
        {"calls": 10_000, "callers": 4},
        {"calls": 200, "callers": 2},
    ),
}


# Benchmarks that can run against the real API server (`--kube real`): run(config, workdir, kube).
REAL_KUBE = frozenset({"storm", "scale", "scaleout"})


def ingest_hook(small: bool, workdir: Path) -> dict[str, Any] | None:
    """Item 1 (ingest throughput) is owned by `bench/ingest/`: run its `run`/`main` if it has one.

    Contract expected from bench/ingest: `run(small: bool, workdir: Path) -> dict` (results), or
    `main(argv) -> dict | int | None`. Until it exists this hook reports it as missing.
    """
    try:
        module = importlib.import_module("bench.ingest")
    except ImportError:
        return None
    if hasattr(module, "run"):
        try:
            result = module.run(small=small, workdir=workdir)
        except TypeError:
            result = module.run(small)
    elif hasattr(module, "main"):
        result = module.main(["--small"] if small else [])
    else:
        return None
    return result if isinstance(result, dict) else {"returned": result}


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["faults"]:  # `python -m bench faults` = `make faults` (bench/faults.py)
        from bench import faults

        return faults.main(args_in[1:])
    if args_in[:1] == ["soak"]:  # `python -m bench soak [--minutes N]` (bench/soak.py)
        from bench import soak

        return soak.main(args_in[1:])
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--small", action="store_true", help="tiny configuration of everything")
    parser.add_argument("--only", nargs="*", default=None, help="only these benchmarks")
    parser.add_argument("--out", type=Path, default=HERE, help="where results/report/plots go")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch dir (default: temp)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="BENCH.KEY=INT",
        help="override one configuration value, e.g. --set scale.services=1000",
    )
    parser.add_argument(
        "--kube",
        choices=report.KUBE_MODES,
        default="emulator",
        help="the Kubernetes API of the stack: the emulator (default) or etcd + kube-apiserver "
        f"(only {', '.join(sorted(REAL_KUBE))}; results under <name>_real)",
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the other benchmarks of an existing results.json (re-run only --only ones)",
    )
    args = parser.parse_args(argv)
    overrides: dict[str, dict[str, Any]] = {}
    for item in args.set:
        key, _, value = item.partition("=")
        bench, _, field = key.partition(".")
        if bench not in BENCHMARKS or not field or not value:
            parser.error(f"bad --set {item!r}")
        overrides.setdefault(bench, {})[field] = float(value) if "." in value else int(value)
    names = args.only or (
        list(BENCHMARKS) if args.kube == "emulator" else [n for n in BENCHMARKS if n in REAL_KUBE]
    )
    unknown = [n for n in names if n not in BENCHMARKS and n != "ingest"]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: ingest, {', '.join(BENCHMARKS)}")
    if args.kube != "emulator":
        others = [n for n in names if n not in REAL_KUBE]
        if others:
            parser.error(
                f"--kube {args.kube}: {', '.join(others)} cannot run against it (only "
                f"{', '.join(sorted(REAL_KUBE))})"
            )
    results = run(
        names,
        small=args.small,
        kube=args.kube,
        out=args.out,
        workdir=args.workdir,
        overrides=overrides,
        merge=args.merge,
    )
    return 0 if all("error" not in r for r in results["benchmarks"].values()) else 1


def run(
    names: list[str],
    *,
    small: bool,
    out: Path,
    workdir: Path | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    merge: bool = False,
    kube: str = "emulator",
) -> dict[str, Any]:
    if kube not in report.KUBE_MODES:
        raise ValueError(f"kube must be one of {report.KUBE_MODES}, not {kube!r}")
    blocked = [n for n in names if kube != "emulator" and n not in REAL_KUBE]
    if blocked:
        raise ValueError(f"{blocked} cannot run against the {kube} API server")
    out.mkdir(parents=True, exist_ok=True)
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    scratch = Path(workdir or tempfile.mkdtemp(prefix="lazyload-bench-"))
    if workdir is None:
        # mkdtemp makes it 0700; the mesh benchmarks' istio-proxies run as UID 1337 and must
        # traverse it to reach their pods' directories
        scratch.chmod(0o755)
    results: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "configuration": "small" if small else "full",
        "overrides": overrides or {},
        "kube": kube,
        "machine": common.machine(),
        "benchmarks": {},
        "plots": {},
    }
    print(f"machine: {results['machine']}", flush=True)
    if kube == "emulator" and ("ingest" in names or len(names) == len(BENCHMARKS)):
        t0 = time.perf_counter()
        try:
            ingest = ingest_hook(small, scratch / "ingest")
        except Exception as e:  # report it, run the rest
            traceback.print_exc()
            ingest = {"error": f"{type(e).__name__}: {e}"}
        results["benchmarks"]["ingest"] = ingest or {
            "missing": "bench/ingest exposes no run()/main() yet (item 1, owned elsewhere)"
        }
        results["benchmarks"]["ingest"]["wall_s"] = round(time.perf_counter() - t0, 1)
    for name in names:
        if name == "ingest":
            continue
        module_name, full, tiny = BENCHMARKS[name]
        key = report.result_key(name, kube)
        config = {**(tiny if small else full), **(overrides or {}).get(name, {})}
        print(f"--- {key} {config}", flush=True)
        load_before = [round(x, 2) for x in os.getloadavg()]
        t0 = time.perf_counter()
        module = importlib.import_module(module_name)
        try:
            if name in REAL_KUBE:
                result = module.run(config, scratch / key, kube=kube)
                result["kube"] = kube
            else:
                result = module.run(config, scratch / key)
            result["config"] = config
            try:
                results["plots"][key] = module.plot(result, plots)
            except Exception as e:
                traceback.print_exc()
                result["plot_error"] = f"{type(e).__name__}: {e}"
        except Exception as e:
            traceback.print_exc()
            result = {"config": config, "error": f"{type(e).__name__}: {e}"}
        result["wall_s"] = round(time.perf_counter() - t0, 1)
        # merged results may come from other runs (other machines): each keeps its own
        result["machine"] = {
            "cpu_model": results["machine"]["cpu_model"],
            "load_avg_at_start": load_before,
            "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
        }
        result["full_config"] = full
        result["reduced"] = small or any(
            isinstance(full.get(k), int | float) and v < full[k] for k, v in config.items()
        )
        results["benchmarks"][key] = result
        print(f"--- {key} done in {result['wall_s']} s", flush=True)
        write(results, out, merge=merge)  # after each benchmark: a later crash loses nothing
    results["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    table = write(results, out, merge=merge)
    print(report.render_table(table))
    print(f"wrote {out / 'results.json'}, {out / 'REPORT.md'}, {plots}/", flush=True)
    return results


def write(results: dict[str, Any], out: Path, *, merge: bool = False) -> list[report.Row]:
    """Write results.json and REPORT.md from what has run so far (with `merge`, the benchmarks of
    the existing results.json that did not run this time are kept, and so is a good earlier result
    whose re-run failed, with the failure in `failed_rerun`); returns the table."""
    previous = out / "results.json"
    if merge and previous.exists() and "merged_from" not in results:
        old = json.loads(previous.read_text())
        results["merged"] = {
            "from": old.get("started_at"),
            "benchmarks": old.get("benchmarks", {}),
            "plots": old.get("plots", {}),
            "configuration": old.get("configuration"),
            "overrides": old.get("overrides", {}),
            "machine": old.get("machine") or {},
        }
        results["merged_from"] = old.get("started_at")
    shown = dict(results)
    kept = results.get("merged") or {}
    benchmarks = dict(results["benchmarks"])
    plots = dict(results["plots"])
    for name, value in kept.get("benchmarks", {}).items():
        new = benchmarks.get(name)
        # a re-run that failed does not wipe out a good earlier result: both are kept
        failed = new if isinstance(new, dict) and "error" in new and "error" not in value else None
        if name not in benchmarks or failed is not None:
            benchmarks[name] = {**value, "from_run": value.get("from_run") or kept.get("from")}
            if "machine" not in value and kept.get("machine"):  # where it was measured
                benchmarks[name]["machine"] = {
                    "cpu_model": kept["machine"].get("cpu_model"),
                    "load_avg_at_start": kept["machine"].get("load_avg_at_start"),
                }
            if failed is not None:
                benchmarks[name]["failed_rerun"] = {
                    "at": results.get("started_at"),
                    "error": failed["error"],
                }
            if name in kept.get("plots", {}):
                plots[name] = kept["plots"][name]
    for name, value in benchmarks.items():  # results of older runs: mark reductions too
        bench, _ = report.split_key(name)
        if bench in BENCHMARKS and "full_config" not in value and "config" in value:
            full = BENCHMARKS[bench][1]
            value["full_config"] = full
            value["reduced"] = any(
                isinstance(full.get(k), int | float) and isinstance(v, int | float) and v < full[k]
                for k, v in value["config"].items()
            )
    shown["benchmarks"], shown["plots"] = benchmarks, plots
    shown.pop("merged", None)
    table = report.table(shown)
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(shown, indent=2, default=str) + "\n")
    tmp.replace(previous)
    written = out / "REPORT.md"
    written.write_text(report.with_history(report.markdown(shown, table), written))
    return table


if __name__ == "__main__":
    sys.exit(main())
