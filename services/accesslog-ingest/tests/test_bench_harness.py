"""The ingest benchmark harness (`python -m bench.ingest`) in its tiny configuration.

Correctness only, no timing asserted: it starts its own nats-server and 2 ingest
replicas, drives them with a real gRPC client, and checks that every entry was counted by the
servers and that JetStream holds exactly the distinct edges of the messages (the two
replicas' duplicates collapse through Nats-Msg-Id); the JSON result
has the figures the README quotes (entries/s, raw decode rate, ratio, replicas).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_small_run(tmp_path: Path) -> None:
    output = tmp_path / "ingest.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.ingest",
            "--small",
            "--replicas",
            "2",
            "--output",
            str(output),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(output.read_text())
    assert result["correct"] is True
    assert [r["replicas"] for r in result["runs"]] == [2]  # the split load; 1 is the same path
    for run in result["runs"]:
        assert run["entries_counted_by_server"] == run["entries"] > 0
        assert run["edges_in_jetstream"] == run["edges_expected"] > 0
        assert run["entries_per_s"] > 0
    assert result["raw_decode_entries_per_s"] > 0
    assert result["ratio_to_raw_decode"] > 0
    assert "raw protobuf decode" in done.stdout
