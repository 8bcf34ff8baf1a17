"""`--version` and `--help` answer instead of starting: the `lazyload` command and each service
binary (which otherwise takes no arguments: an unknown one is an error, exit 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
SERVICES = ["accesslog-ingest", "fence-reconciler", "sidecar-writer", "global-pilot"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]], capture_output=True, text=True, timeout=60, check=False
    )


def test_lazyload_version() -> None:
    done = _run("lazyload", "--version")
    assert done.returncode == 0 and done.stdout.strip() == "lazyload 0.1.0"


@pytest.mark.parametrize("service", SERVICES)
def test_service_version_help_and_bad_arguments(service: str) -> None:
    program = f"lazyload-{service}"
    version = _run(program, "--version")
    assert version.returncode == 0 and version.stdout.strip() == f"{program} 0.1.0"
    helped = _run(program, "--help")
    assert helped.returncode == 0 and "LAZYLOAD_" in helped.stdout
    assert f"usage: {program}" in helped.stdout
    wrong = _run(program, "--bogus")
    assert wrong.returncode == 2 and "unrecognized arguments: --bogus" in wrong.stderr
