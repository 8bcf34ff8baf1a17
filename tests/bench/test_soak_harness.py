"""`python -m bench soak` in a ~20 s form, so its harness cannot rot: the real stack (nats-server,
the API emulator, the four services) under the mixed load (new and repeated edges, fence edits,
rounds of fence deletes, edges called again as new once ingest's refresh interval passed); the
sampler sees RSS, open fds and asyncio tasks of every service, the Sidecars equal the load's
truth in every round and at the end, and the run is merged into results.json and REPORT.md. Growth is not judged here (20 s has no warm-up): the full run is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import soak

# long: `make soak`/`make faults` run it before their run; `make test` leaves it out
pytestmark = [pytest.mark.e2e, pytest.mark.long, pytest.mark.timeout(240)]


def test_a_short_soak_samples_every_service_and_matches_the_truth(tmp_path: Path) -> None:
    config = {
        **soak.FULL,
        "minutes": 20 / 60,
        "callers": 8,
        "groups": 2,
        "round_s": 6.0,
        "sample_s": 1.0,
        # a short dedup refresh and a small window: edges are called as new again after a
        # delete (ingest must publish them again, the truth expects them)
        "refresh_s": 3.0,
        "dests_per_caller": 8,
    }
    result = soak.run(config, tmp_path / "work")
    result["config"] = config
    assert result["edges_new"] > 0 and result["edges_repeated"] > 0, result
    assert result["fence_edits"] > 0 and result["fences_deleted"] > 0, result
    assert result["edges_new_again"] > 0, result  # learned again after their fence's delete
    assert result["rounds"] >= 2, result["round_log"]
    assert result["round_mismatches"] == 0, result["round_log"]
    assert result["truth_mismatched_callers"] == 0, result["truth_mismatch_detail"]
    assert result["truth_hosts"] > 0 and result["restarts"] == []
    for name in soak.SERVICES:
        entry = result["processes"][name]
        assert entry["samples"] >= 10, (name, entry)
        for metric in ("rss_mb", "fds", "tasks"):
            assert entry[metric]["last"] > 0, (name, metric, entry)
        assert "grew" in entry  # judged (by the rule), whatever it says after 20 s
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text(json.dumps({"benchmarks": {"other": {"x": 1}}}))
    soak.record(result, out, started="test")
    saved = json.loads((out / "results.json").read_text())
    assert set(saved["benchmarks"]) == {"other", "soak"}
    assert saved["benchmarks"]["soak"]["reduced"] is True
    report = (out / "REPORT.md").read_text()
    assert "| soak | Sidecars = truth | 0 callers differ at the end" in report, report
    assert (out / "plots" / "soak.png").stat().st_size > 0
    series = json.loads((out / soak.SERIES_FILE).read_text())  # the samples, beside results.json
    assert set(series) == set(soak.SAMPLED) and "series" not in saved["benchmarks"]["soak"]
