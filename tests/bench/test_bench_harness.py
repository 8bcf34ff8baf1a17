"""The benchmark harness in its tiny configuration: results have the expected keys and their
counts are consistent. No timing is asserted (the suite must not rot; speed is `make bench`'s job).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import __main__ as runner  # noqa: E402
from bench import report  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

TINY: dict[str, dict[str, Any]] = {
    "savings": {"mesh_sizes": [20, 40]},
    "convergence": {"dependencies": 2},
    "storm": {"fences": 5, "edges": 25},
    "scale": {"services": 5, "edges": 20},
    # one run (2 replicas: the second process is the part of the harness to keep working)
    "scaleout": {"fences": 4, "edges": 16, "replica_counts": [2]},
}


def _run(name: str, tmp_path: Path, config: dict[str, Any] | None = None) -> dict[str, Any]:
    results = runner.run(
        [name],
        small=True,
        out=tmp_path / "out",
        workdir=tmp_path / "work",
        overrides={name: config or TINY[name]},
    )
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["configuration"] == "small"
    assert {"cpu_model", "logical_cores", "ram_gb", "python", "envoy"} <= set(saved["machine"])
    md = (tmp_path / "out" / "REPORT.md").read_text()
    assert "Machine:" in md and "| benchmark | metric | value |" in md
    result = results["benchmarks"][name]
    assert "error" not in result, result.get("error")
    assert "plot_error" not in result, result.get("plot_error")
    for plot in results["plots"][name]:
        assert (tmp_path / "out" / "plots" / plot).stat().st_size > 0
    assert report.table(results)
    return result


def test_savings(tmp_path: Path) -> None:
    r = _run("savings", tmp_path)
    assert r["reference"]["rss_mb"] > 0
    assert [s["mesh_services"] for s in r["by_size"]] == [20, 40]
    for s in r["by_size"]:
        u, f = s["unscoped"], s["fenced"]
        # + the always-visible istio-system and mesh-operator services
        assert u["clusters"] == s["mesh_services"] + 2
        assert f["clusters"] == r["dependencies"] + 2
        assert u["xds_nacks"] == f["xds_nacks"] == 0
        assert 0 < f["xds_bytes_total"] < u["xds_bytes_total"]
        assert s["ratio_xds_bytes"] == pytest.approx(
            f["xds_bytes_total"] / u["xds_bytes_total"], rel=1e-3
        )
        assert u["config_dump_bytes"] > 0 and f["config_dump_bytes"] > 0


def test_convergence(tmp_path: Path) -> None:
    r = _run("convergence", tmp_path)
    assert r["dependencies"] == 2
    assert r["learned"] == len(r["latencies_s"]) == 2
    assert all(status == 200 for status in r["first_call_status"].values())
    assert r["p50_s"] <= r["p95_s"] <= r["p99_s"] <= r["max_s"]
    ref = r["reference"]
    assert ref["slime_is_measured"] is False
    assert ref["pipeline_floor_s"] > 0 and ref["jetstream_hop_samples"] > 0


def test_storm(tmp_path: Path) -> None:
    r = _run("storm", tmp_path)
    assert (r["fences"], r["edges"]) == (5, 25)
    w = r["writes"]
    # every fence got a Sidecar and a ServiceFence created (a retried create may add one)
    assert w["sidecar"]["creates"] >= 5 and w["servicefence"]["creates"] >= 5
    assert w["sidecar"]["writes"] >= 5 and w["servicefence"]["writes"] >= 5
    total = w["sidecar"]["writes"] + w["servicefence"]["writes"]
    assert r["ratio_writes_to_naive"] == pytest.approx(total / (2 * 25), rel=1e-3)
    assert r["api_requests"] >= total
    assert r["all_right_s"] > 0


def test_scale(tmp_path: Path) -> None:
    r = _run("scale", tmp_path)
    assert (r["services"], r["edges"]) == (5, 20)
    for name in ("fence-reconciler", "sidecar-writer"):
        assert r["rss_idle_mb"][name] > 0
        assert r["rss_peak_mb"][name] > 0
        assert r["rss_after_restart_mb"][name] > 0
    assert r["restart_converged_s"] >= r["restart_ready_s"] > 0
    assert r["events_per_s"] > 0


def test_scaleout(tmp_path: Path) -> None:
    r = _run("scaleout", tmp_path)
    assert (r["fences"], r["edges"]) == (4, 16)
    (run,) = r["runs"]
    assert run["replicas"] == 2
    assert run["partial"] is None
    assert run["all_right_s"] > 0
    assert run["servicefence_writes"] >= 4


def test_storm_timeout_is_a_partial_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A storm that does not converge in time is reported as partial (not an error)."""
    import bench.storm as storm_module

    async def timed_out(config: dict[str, Any], workdir: Path, qps: Any) -> dict[str, Any]:
        writes = storm_module.count_writes([], fences=3)
        return {
            "fences": 3,
            "edges": 9,
            "edges_per_fence": 3.0,
            "publish_s": 1.0,
            "all_right_s": None,
            "fences_right": 1,
            "partial": "every Sidecar right not reached within 0s (1 of 3 fences right after 1 s)",
            "writes": writes,
            "ratio_writes_to_naive": 0.0,
            "ratio_all_right_to_publish": None,
            "kube_qps": 50.0,
        }

    monkeypatch.setattr(storm_module, "_one", timed_out)
    monkeypatch.setattr(storm_module, "plot", lambda result, plots: [])
    results = runner.run(
        ["storm"], small=True, out=tmp_path, overrides={"storm": {"fences": 3, "edges": 9}}
    )
    r = results["benchmarks"]["storm"]
    assert "error" not in r and r["partial"]
    rows = report.table(results)
    assert ("storm", "PARTIAL", r["partial"]) in rows
    assert any("not reached (1 of 3 fences)" in value for _, _, value in rows)
    assert "**PARTIAL**" in (tmp_path / "REPORT.md").read_text()


def test_runner_writes_results_after_each_benchmark_and_marks_reductions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """results.json exists after the first benchmark even when a later one dies; --set values
    below the full configuration are marked REDUCED in the table and REPORT.md."""
    import types

    out = tmp_path / "out"
    seen: list[set[str]] = []

    def good_run(config: dict[str, Any], workdir: Path) -> dict[str, Any]:
        return {"value": config["n"]}

    def bad_run(config: dict[str, Any], workdir: Path) -> dict[str, Any]:
        seen.append(set(json.loads((out / "results.json").read_text())["benchmarks"]))
        raise KeyboardInterrupt  # the run dies: what ran before must be on disk already

    for name, fn in (("fake_good", good_run), ("fake_bad", bad_run)):
        module = types.ModuleType(f"bench.{name}")
        module.run = fn  # type: ignore[attr-defined]
        module.plot = lambda result, plots: []  # type: ignore[attr-defined]
        module.rows = lambda result: [("fake", "value", str(result.get("value")))]  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, f"bench.{name}", module)
        monkeypatch.setitem(runner.BENCHMARKS, name, (f"bench.{name}", {"n": 100}, {"n": 1}))
        monkeypatch.setitem(report.MODULES, name, f"bench.{name}")
    with pytest.raises(KeyboardInterrupt):
        runner.run(
            ["fake_good", "fake_bad"],
            small=False,
            out=out,
            workdir=tmp_path / "work",
            overrides={"fake_good": {"n": 10}},
        )
    assert seen == [{"fake_good"}]
    saved = json.loads((out / "results.json").read_text())
    assert saved["benchmarks"]["fake_good"]["reduced"] is True
    md = (out / "REPORT.md").read_text()
    assert "REDUCED" in md and "n=10 (full: 100)" in md and "--set fake_good.n=10" in md


def test_ingest_hook_is_called(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m bench` runs bench/ingest's `run(small=, workdir=)` (owned by another item)."""
    import types

    calls: list[tuple[bool, Path]] = []
    fake = types.ModuleType("bench.ingest")
    fake.run = lambda small, workdir: calls.append((small, workdir)) or {"entries_per_s": 1.0}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bench.ingest", fake)
    assert runner.ingest_hook(True, tmp_path) == {"entries_per_s": 1.0}
    assert calls == [(True, tmp_path)]


def test_count_writes_counts_writes_only() -> None:
    """The writer GETs a Sidecar (and the fence, for its condition) before it writes: reads in
    the same window are not writes (they once made 'max per window' read 2)."""
    from bench.storm import count_writes

    sc = "/apis/networking.istio.io/v1/namespaces/storm/sidecars"
    sf = "/apis/microservice.slime.io/v1alpha1/namespaces/storm/servicefences"

    def rec(t: float, verb: str, path: str, status: int = 200) -> dict[str, Any]:
        return {"time": t, "verb": verb, "path": path, "query": "", "status": status}

    records = [
        rec(10.00, "GET", f"{sc}/a", 404),
        rec(10.01, "POST", sc, 201),
        rec(10.30, "GET", f"{sc}/a"),
        rec(10.31, "PUT", f"{sc}/a"),
        rec(10.32, "PUT", f"{sc}/a", 409),
        rec(10.00, "POST", sf, 201),
        rec(10.21, "GET", f"{sf}/a"),
        rec(10.22, "PUT", f"{sf}/a/status"),
        rec(10.25, "PATCH", f"{sf}/a/status"),
    ]
    w = count_writes(records, fences=1)
    assert (w["sidecar"]["writes"], w["sidecar"]["creates"]) == (2, 1)
    assert w["sidecar"]["per_fence_per_window_max"] == 1
    assert w["servicefence"]["writes"] == 3
    assert w["servicefence"]["per_fence_per_window_max"] == 2  # reconciler PUT + writer PATCH
    assert w["servicefence_by_writer"]["reconciler"]["per_fence_per_window_max"] == 1
    assert w["servicefence_by_writer"]["condition"]["writes"] == 1
