"""The benchmark harness in its tiny configuration: results have the expected keys and their
counts are consistent. No timing is asserted (the suite must not rot; speed is `make bench`'s job).
"""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Callable
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


def _run(
    name: str, tmp_path: Path, config: dict[str, Any] | None = None, kube: str = "emulator"
) -> dict[str, Any]:
    results = runner.run(
        [name],
        small=True,
        out=tmp_path / "out",
        workdir=tmp_path / "work",
        overrides={name: config or TINY[name]},
        kube=kube,
    )
    name = report.result_key(name, kube)
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

    async def timed_out(
        config: dict[str, Any], workdir: Path, qps: Any, kube: str = "emulator"
    ) -> dict[str, Any]:
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


Rows = list[tuple[str, str, str]]


class _FakeBench(types.ModuleType):
    """A module of bench/ as the runner and the report call it: `run`, `plot` and `rows`."""

    def __init__(
        self,
        name: str,
        run: Callable[..., dict[str, Any]],
        rows: Callable[[dict[str, Any]], Rows] = lambda result: [],
        plot: Callable[[dict[str, Any], Path], list[str]] = lambda result, plots: [],
    ) -> None:
        super().__init__(f"bench.{name}")
        self.run, self.rows, self.plot = run, rows, plot


def test_runner_writes_results_after_each_benchmark_and_marks_reductions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """results.json exists after the first benchmark even when a later one dies; --set values
    below the full configuration are marked REDUCED in the table and REPORT.md."""
    out = tmp_path / "out"
    seen: list[set[str]] = []

    def good_run(config: dict[str, Any], workdir: Path) -> dict[str, Any]:
        return {"value": config["n"]}

    def bad_run(config: dict[str, Any], workdir: Path) -> dict[str, Any]:
        seen.append(set(json.loads((out / "results.json").read_text())["benchmarks"]))
        raise KeyboardInterrupt  # the run dies: what ran before must be on disk already

    for name, fn in (("fake_good", good_run), ("fake_bad", bad_run)):
        module = _FakeBench(name, fn, lambda result: [("fake", "value", str(result.get("value")))])
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
    calls: list[tuple[bool, Path]] = []

    def run(small: bool, workdir: Path) -> dict[str, Any]:
        calls.append((small, workdir))
        return {"entries_per_s": 1.0}

    monkeypatch.setitem(sys.modules, "bench.ingest", _FakeBench("ingest", run))
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


# --- the Kubernetes API of the stack: --kube emulator|real ------------------------------------


@pytest.mark.real  # deselected (and said) where make setup could not build kube-apiserver
def test_storm_real(tmp_path: Path) -> None:
    """The storm against etcd + kube-apiserver: kept as storm_real, writes counted from the audit
    log, and they agree with the services' own write counters."""
    r = _run("storm", tmp_path, kube="real")
    assert r["kube"] == "real" and (r["fences"], r["edges"]) == (5, 25)
    w = r["writes"]
    assert w["source"] == "audit log"
    assert w["sidecar"]["creates"] >= 5 and w["servicefence"]["creates"] >= 5
    counters = r["metrics_writes"]
    assert w["sidecar"]["writes"] == sum(counters["sidecar-writer"].values())
    assert w["servicefence_by_writer"]["reconciler"]["writes"] == sum(
        counters["fence-reconciler"].values()
    )
    assert r["all_right_s"] > 0
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(saved["benchmarks"]) == {"storm_real"} and saved["kube"] == "real"
    assert saved["plots"]["storm_real"] == ["storm_writes_real.png"]


def _parsed(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> dict[str, Any]:
    """What `python -m bench ARGV` hands to run()."""
    seen: dict[str, Any] = {}

    def fake_run(names: list[str], **kwargs: Any) -> dict[str, Any]:
        seen.update(kwargs, names=names)
        return {"benchmarks": {}}

    monkeypatch.setattr(runner, "run", fake_run)
    assert runner.main(argv) == 0
    return seen


def test_kube_flag_defaults_to_the_emulator(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _parsed(monkeypatch, [])
    assert seen["kube"] == "emulator" and seen["names"] == list(runner.BENCHMARKS)
    assert _parsed(monkeypatch, ["--kube", "emulator", "--only", "savings"])["kube"] == "emulator"


def test_kube_real_runs_the_benchmarks_that_can(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _parsed(monkeypatch, ["--kube", "real", "--small"])
    assert seen["kube"] == "real" and seen["small"] is True
    assert seen["names"] == ["storm", "scale", "scaleout"]
    seen = _parsed(
        monkeypatch, ["--kube", "real", "--only", "scale", "--merge", "--set", "scale.edges=10"]
    )
    assert seen["names"] == ["scale"] and seen["merge"] is True
    assert seen["overrides"] == {"scale": {"edges": 10}}


@pytest.mark.parametrize(
    "argv",
    [
        ["--kube", "kind"],
        ["--kube"],
        ["--kube", "real", "--only", "savings"],
        ["--kube", "real", "--only", "storm", "ingest"],
        ["--kube", "real", "--only", "convergence"],
    ],
)
def test_kube_flag_refuses(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(runner, "run", lambda *a, **k: pytest.fail("ran"))
    with pytest.raises(SystemExit) as exit_info:
        runner.main(argv)
    assert exit_info.value.code == 2
    assert "--kube" in capsys.readouterr().err


def test_run_refuses_a_benchmark_the_real_server_cannot_run(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="savings"):
        runner.run(["savings"], small=True, out=tmp_path, kube="real")
    with pytest.raises(ValueError, match="kube"):
        runner.run(["storm"], small=True, out=tmp_path, kube="kind")


def test_result_keys() -> None:
    assert report.result_key("scale", "emulator") == "scale"
    assert report.result_key("scale", "real") == "scale_real"
    assert report.split_key("scale_real") == ("scale", "real")
    assert report.split_key("scale") == ("scale", "emulator")
    assert report.split_key("ingest") == ("ingest", "emulator")
    assert report.kube_of("savings", {}) is None
    assert report.kube_of("convergence", {}) == "emulator"  # results from before the flag
    assert report.kube_of("storm_real", {}) == "real"


def test_real_results_sit_beside_the_emulator_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `--kube real --merge` run keeps the emulator's result under its key, adds `<name>_real`,
    labels its rows with that key and puts both side by side in REPORT.md."""
    from bench.common import plot_file

    calls: list[tuple[str, Path]] = []

    def fake_run(config: dict[str, Any], workdir: Path, kube: str = "emulator") -> dict[str, Any]:
        calls.append((kube, workdir))
        return {"value": 10 if kube == "real" else 1, "notes": [f"on {kube}"]}

    module = _FakeBench(
        "fake_kube",
        fake_run,
        lambda result: [("fake_kube", "value", str(result["value"]))],
        plot=lambda result, plots: [plot_file(result, "fake.png")],
    )
    monkeypatch.setitem(sys.modules, "bench.fake_kube", module)
    monkeypatch.setitem(runner.BENCHMARKS, "fake_kube", ("bench.fake_kube", {"n": 1}, {"n": 1}))
    monkeypatch.setitem(report.MODULES, "fake_kube", "bench.fake_kube")
    monkeypatch.setattr(runner, "REAL_KUBE", runner.REAL_KUBE | {"fake_kube"})
    out, work = tmp_path / "out", tmp_path / "work"
    runner.run(["fake_kube"], small=False, out=out, workdir=work)
    results = runner.run(["fake_kube"], small=False, out=out, workdir=work, merge=True, kube="real")
    assert calls == [("emulator", work / "fake_kube"), ("real", work / "fake_kube_real")]
    assert results["kube"] == "real"
    saved = json.loads((out / "results.json").read_text())
    assert saved["benchmarks"]["fake_kube"]["value"] == 1
    assert saved["benchmarks"]["fake_kube"]["kube"] == "emulator"
    assert saved["benchmarks"]["fake_kube"]["from_run"]  # kept from the first run
    assert saved["benchmarks"]["fake_kube_real"]["value"] == 10
    assert saved["benchmarks"]["fake_kube_real"]["kube"] == "real"
    assert saved["plots"] == {"fake_kube": ["fake.png"], "fake_kube_real": ["fake_real.png"]}
    rows = report.table(saved)
    assert ("fake_kube", "value", "1") in rows and ("fake_kube_real", "value", "10") in rows
    md = (out / "REPORT.md").read_text()
    assert "`python -m bench --kube real`" in md
    assert "| fake_kube_real | real | n=1 | full | none | this run |" in md
    assert "## API emulator vs real kube-apiserver" in md
    assert "| fake_kube | value | 1 | 10 |" in md
    assert "## fake_kube_real" in md and "on real" in md


def test_audit_log_reader(tmp_path: Path) -> None:
    """kube-apiserver's JSON audit log read as RequestLog records, incrementally; a line still
    being written waits for its end."""
    from bench.common import AuditLog
    from bench.storm import count_writes

    log_path = tmp_path / "audit.log"
    sf = "/apis/microservice.slime.io/v1alpha1/namespaces/storm/servicefences"

    def event(n: int, verb: str, uri: str, code: int, stage: str = "ResponseComplete") -> str:
        return json.dumps(
            {
                "auditID": f"id-{n}",
                "stage": stage,
                "verb": verb,
                "requestURI": uri,
                "user": {"username": "lazyload-admin"},
                "responseStatus": {"code": code},
                "requestReceivedTimestamp": f"2026-11-26T10:00:00.{n:06d}Z",
            }
        )

    log_path.write_text(event(1, "create", sf, 201) + "\n")
    log = AuditLog(log_path)
    log.clear()  # what was there before is not counted
    second = event(200_000, "update", f"{sf}/a/status?fieldManager=x", 200)
    with log_path.open("a") as f:
        f.write(event(2, "get", f"{sf}/a", 200) + "\n")
        f.write(event(3, "watch", f"{sf}?watch=1", 200, stage="ResponseStarted") + "\n")
        f.write(second[:20])
    assert log.poll() == 1
    with log_path.open("a") as f:
        f.write(second[20:] + "\n" + event(300_000, "patch", f"{sf}/a/status", 200) + "\n")
    assert log.poll() == 2
    records = sorted(log.records.values(), key=lambda r: r["time"])
    assert [(r["verb"], r["path"], r["query"]) for r in records] == [
        ("GET", f"{sf}/a", ""),
        ("PUT", f"{sf}/a/status", "fieldManager=x"),
        ("PATCH", f"{sf}/a/status", ""),
    ]
    assert records[1]["time"] - records[0]["time"] == pytest.approx(0.199998)
    w = count_writes(records, fences=1)
    assert w["servicefence"]["writes"] == 2
    assert w["servicefence_by_writer"]["reconciler"]["writes"] == 1
    assert [r["path"] for r in log.writes()] == [f"{sf}/a/status"] * 2


def test_metrics_writes_and_min_gap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Write counters from the services' /metrics (for a real API server without an audit log),
    in count_writes' shape; the shortest gap between two writes of one fence by one writer."""
    import httpx

    from bench import common
    from bench.storm import count_writes, writes_from_metrics

    pages = {
        "http://r/metrics": '# HELP x\nlazyload_fence_writes_total{op="create"} 3.0\n'
        'lazyload_fence_writes_total{op="status"} 7.0\n'
        'lazyload_fence_writes_created{op="create"} 1.7e9\n',
        "http://w/metrics": 'lazyload_sidecar_writer_writes_total{action="create"} 3.0\n'
        'lazyload_sidecar_writer_writes_total{action="replace"} 2.0\n',
    }
    monkeypatch.setattr(httpx, "get", lambda url, timeout: types.SimpleNamespace(text=pages[url]))
    counts = common.metrics_writes({"fence-reconciler": "http://r", "sidecar-writer": "http://w"})
    assert counts == {
        "fence-reconciler": {"create": 3.0, "status": 7.0},
        "sidecar-writer": {"create": 3.0, "replace": 2.0},
    }
    w = writes_from_metrics(counts, fences=3)
    assert w["source"] == "metrics"
    assert (w["servicefence"]["writes"], w["servicefence"]["creates"]) == (10, 3)
    assert (w["sidecar"]["writes"], w["sidecar"]["per_fence_mean"]) == (5, 1.667)
    assert w["sidecar"]["per_fence_per_window_max"] is None
    assert w["servicefence_by_writer"]["reconciler"]["writes"] == 10

    sf = "/apis/microservice.slime.io/v1alpha1/namespaces/storm/servicefences"
    records = [
        {"time": t, "verb": v, "path": f"{sf}/{n}/status", "query": "", "status": 200}
        for t, v, n in [
            (1.0, "PUT", "a"),
            (1.06, "PUT", "a"),
            (1.07, "PATCH", "a"),
            (2, "PUT", "b"),
        ]
    ]
    gaps = count_writes(records, fences=2)["min_gap_s"]
    assert gaps == {"sidecar": None, "reconciler": pytest.approx(0.06)}


def test_merge_keeps_a_good_result_whose_rerun_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outcomes = iter([{"value": 1}, RuntimeError("a service exited while starting")])

    def flaky_run(config: dict[str, Any], workdir: Path) -> dict[str, Any]:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    module = _FakeBench(
        "fake_flaky", flaky_run, lambda result: [("fake_flaky", "value", str(result["value"]))]
    )
    monkeypatch.setitem(sys.modules, "bench.fake_flaky", module)
    monkeypatch.setitem(runner.BENCHMARKS, "fake_flaky", ("bench.fake_flaky", {"n": 1}, {"n": 1}))
    monkeypatch.setitem(report.MODULES, "fake_flaky", "bench.fake_flaky")
    out = tmp_path / "out"
    first = runner.run(["fake_flaky"], small=False, out=out, workdir=tmp_path / "w")
    runner.run(["fake_flaky"], small=False, out=out, workdir=tmp_path / "w", merge=True)
    saved = json.loads((out / "results.json").read_text())["benchmarks"]["fake_flaky"]
    assert saved["value"] == 1 and saved["from_run"] == first["started_at"]
    assert "a service exited" in saved["failed_rerun"]["error"]
