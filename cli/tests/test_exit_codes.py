"""`lazyload fences` fails with one line on stderr and an exit code per cause (no traceback):
2 for a usage error, 3 for a state dir without a stack, 5 for a fence-reconciler that cannot be
reached."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from lazyload_cli.main import app
from typer.testing import CliRunner

BIN = Path(sys.executable).parent / "lazyload"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_missing_state_dir_exits_3_with_one_line(tmp_path: Path) -> None:
    result = _run("fences", "list", "--state-dir", str(tmp_path / "nowhere"))
    assert result.returncode == 3, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "endpoints.json is missing" in lines[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_unreachable_reconciler_exits_5_with_one_line() -> None:
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = _run("fences", "reset", "default/reviews", "--admin", f"http://127.0.0.1:{port}")
    assert result.returncode == 5, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach the fence-reconciler" in lines[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_reset_takes_fences_or_all_of_a_namespace() -> None:
    """Usage errors (exit 2) before anything is called: no fence, --all without --namespace,
    fences and --all together, --namespace without --all, a fence without its namespace."""
    runner = CliRunner()
    admin = ["--admin", "http://127.0.0.1:9"]  # never reached
    for args in (
        [],
        ["--all"],
        ["default/reviews", "--all", "-n", "default"],
        ["-n", "default"],
        ["reviews"],
    ):
        result = runner.invoke(app, ["fences", "reset", *args, *admin])
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output
