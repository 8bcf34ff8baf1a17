"""The real-mesh benchmarks (bench/mesh_convergence.py, bench/mesh_savings.py, bench/first_calls.py):
their arithmetic on recorded samples (percentiles, stage split, istiod histogram deltas, failure
reasons), the Sidecar the savings benchmark fences its probe with (sidecar-writer's own rendering),
and one tiny run of first_calls on the real-Istio rig (marked `real` and `mesh`) so the harness
cannot rot. No timing is asserted."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import first_calls, mesh_convergence, mesh_rig, mesh_savings  # noqa: E402
from bench import report as bench_report  # noqa: E402


def test_histogram_delta_is_per_label_set_and_only_between_the_scrapes() -> None:
    before = {
        "pilot_xds_push_time_count{type=cds}": 2.0,
        "pilot_xds_push_time_sum{type=cds}": 1.0,
        "pilot_xds_push_time_count{type=eds}": 1.0,
        "pilot_xds_push_time_sum{type=eds}": 0.5,
    }
    after = {
        "pilot_xds_push_time_count{type=cds}": 6.0,
        "pilot_xds_push_time_sum{type=cds}": 3.0,
        "pilot_xds_push_time_count{type=eds}": 1.0,  # nothing new: left out
        "pilot_xds_push_time_sum{type=eds}": 0.5,
        "pilot_proxy_convergence_time_count{}": 3.0,
        "pilot_proxy_convergence_time_sum{}": 0.3,
    }
    assert mesh_rig.histogram_delta(before, after, "pilot_xds_push_time") == {
        "type=cds": {"count": 4.0, "mean_s": 0.5}
    }
    delta = mesh_rig.histogram_delta(before, after, "pilot_proxy_convergence_time")
    assert delta == {"all": {"count": 3.0, "mean_s": pytest.approx(0.1)}}


def test_convergence_splits_each_dependency_into_the_sidecar_and_the_push_stage() -> None:
    records = [
        {
            "caller": "caller-0",
            "host": f"dep-{i}",
            "t0": 100.0 * i,
            "first_status": 200,
            "first_via_global_sidecar": True,
            "sidecar_at": 100.0 * i + 0.3,
            "direct_at": 100.0 * i + 0.5,
            "second_status": 200,
            "second_direct": True,
        }
        for i in range(4)
    ]
    records.append({"caller": "caller-1", "host": "dep-9", "t0": 0.0, "first_error": "reset"})
    result = mesh_convergence._summarise(5, 2, 1, records, 10.0, 1.0)
    assert result["first_calls_ok"] == 4 and result["converged"] == 4
    assert result["first_call_failures"] == ["reset"]
    assert result["first_call_to_direct"]["p50_s"] == pytest.approx(0.5)
    assert result["first_call_to_sidecar"]["p99_s"] == pytest.approx(0.3)
    assert result["sidecar_to_direct"]["p50_s"] == pytest.approx(0.2)
    assert result["ratio_p50_to_push_stage"] == pytest.approx(2.5)
    assert result["share_sidecar_stage_p50"] == pytest.approx(0.6)
    assert ("mesh_convergence", "p50 whole / push stage", "2.50x") in mesh_convergence.rows(result)


def test_first_call_failures_are_grouped_by_reason() -> None:
    a = first_calls._reason("caller-3: http: ConnectionResetError: [Errno 104] to 10.96.0.12:80")
    b = first_calls._reason("caller-0: http: ConnectionResetError: [Errno 104] to 10.96.3.4:80")
    assert a == b and "ConnectionResetError" in a


def test_the_fenced_probe_gets_the_sidecar_lazyload_writes() -> None:
    sidecar = mesh_savings._fence_sidecar("probe", 10)
    hosts = sidecar["spec"]["egress"][0]["hosts"]
    assert sidecar["kind"] == "Sidecar"
    assert sidecar["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "lazyload"
    assert sidecar["spec"]["workloadSelector"] == {"labels": {"app": "probe"}}
    assert {"istio-system/*", "mesh-operator/*"} <= set(hosts)
    assert sorted(h for h in hosts if h.startswith("*/")) == sorted(
        f"*/{mesh_savings._host(i)}" for i in range(10)
    )


def test_the_report_knows_the_mesh_benchmarks() -> None:
    for name in ("mesh_convergence", "mesh_savings", "first_calls"):
        assert name in bench_report.MODULES


@pytest.mark.real
@pytest.mark.mesh
@pytest.mark.timeout(300)
def test_first_calls_on_the_real_rig(istio_mesh: Any) -> None:
    # not tmp_path: its parents are 0700 and the sidecars (UID 1337) read their files there
    with tempfile.TemporaryDirectory(prefix="lazyload-bench-mesh-") as tmp:
        Path(tmp).chmod(0o755)
        result = first_calls.run(
            {"calls": 4, "callers": 1, "echo_pods": 1, "concurrency": 2, "direct_calls": 4},
            Path(tmp),
            mesh=istio_mesh,
        )
    first, direct = result["first"], result["direct"]
    assert (first["calls"], first["failures"]) == (4, 0), first["failure_reasons"]
    assert first["via_global_sidecar"] == 4
    assert result["learned"] == 4
    assert (direct["calls"], direct["failures"], direct["via_global_sidecar"]) == (4, 0, 0)
    assert first_calls.rows(result)
