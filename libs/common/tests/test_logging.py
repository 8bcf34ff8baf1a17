"""LAZYLOAD_LOG_FORMAT=json: one JSON object a line, with the fence as a field; a bad value
stops a service at start-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from lazyload_common import errors
from lazyload_common import settings as settings_module
from lazyload_sidecar_writer.settings import WriterSettings

PROGRAM = """
import logging
from lazyload_common import tasks
tasks.configure_logging("INFO", "json")
log = logging.getLogger("lazyload.test")
log.info("Sidecar %s: %s", "default/productpage", "create", extra={"fence": "default/productpage"})
log.debug("not shown")
try:
    raise ValueError("boom")
except ValueError:
    log.exception("failed")
"""


def test_json_lines_carry_the_fence() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=60, check=True
    )
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert len(lines) == 2
    first, second = lines
    assert first["message"] == "Sidecar default/productpage: create"
    assert first["fence"] == "default/productpage"
    assert (first["level"], first["logger"]) == ("INFO", "lazyload.test")
    assert first["time"].endswith("+00:00")
    assert "fence" not in second and "ValueError: boom" in second["exception"]


def test_log_format_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(os.environ, "LAZYLOAD_LOG_FORMAT", "json")
    assert settings_module.from_environment(WriterSettings).log_format == "json"
    monkeypatch.setitem(os.environ, "LAZYLOAD_LOG_FORMAT", "yaml")
    with pytest.raises(errors.ConfigError, match="LAZYLOAD_LOG_FORMAT"):
        settings_module.from_environment(WriterSettings)
