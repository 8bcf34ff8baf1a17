"""`make faults` in a tiny form, so its harness cannot rot: a real stack (nats-server, the API
emulator, the four services, the supervisor) under the ALS load, the reference window and the
watch-expiry fault; every figure present, edges sent and none lost, the result merged into
results.json and REPORT.md next to the other benchmarks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import faults

# long: `make soak`/`make faults` run it before their run; `make test` leaves it out
pytestmark = [pytest.mark.e2e, pytest.mark.long, pytest.mark.timeout(240)]


def test_two_faults_on_a_real_stack(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text(json.dumps({"benchmarks": {"other": {"x": 1}}}))
    argv = ["--small", "--only", "none", "watch-expired", "--out", str(out)]
    code = faults.main([*argv, "--workdir", str(tmp_path / "work")])
    saved = json.loads((out / "results.json").read_text())
    result = saved["benchmarks"]["faults"]
    assert code == 0, result
    assert set(saved["benchmarks"]) == {"other", "faults"}  # merged, the others kept
    assert [f["fault"] for f in result["faults"]] == ["none", "watch-expired"]
    for line in result["faults"]:
        assert line["edges_sent"] > 0 and line["edges_lost"] == 0, line
        assert line["recover_s"] is not None and line["duplicate_writes"] >= 0, line
    assert result["faults"][1]["watches_expired"] > 0  # the services' watches were ended
    assert result["reduced"] is True and result["edges_lost_total"] == 0
    assert "| faults | watch-expired |" in (out / "REPORT.md").read_text()
    assert "every watch expired" in faults.markdown_table(result)
