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
}


def _run(name: str, tmp_path: Path) -> dict[str, Any]:
    results = runner.run(
        [name],
        small=True,
        out=tmp_path / "out",
        workdir=tmp_path / "work",
        overrides={name: TINY[name]},
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


def test_ingest_hook_is_called(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m bench` runs bench/ingest's `run(small=, workdir=)` (owned by another item)."""
    import types

    calls: list[tuple[bool, Path]] = []
    fake = types.ModuleType("bench.ingest")
    fake.run = lambda small, workdir: calls.append((small, workdir)) or {"entries_per_s": 1.0}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bench.ingest", fake)
    assert runner.ingest_hook(True, tmp_path) == {"entries_per_s": 1.0}
    assert calls == [(True, tmp_path)]
