"""`tasks.freeze_heap`: what is alive at a service's start is frozen out of the collector's sight,
and what comes later is still collected. `tasks.run_main`: a console script whose guarded task
fails exits non-zero, one stopped by SIGTERM exits 0."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import weakref
from pathlib import Path

from lazyload_common import tasks


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


def test_freeze_heap_freezes_the_start_and_leaves_the_rest_collectable() -> None:
    before = _Node()
    try:
        tasks.freeze_heap()
        assert gc.get_freeze_count() > 0
        assert any(o is before for o in gc.get_objects()) is False  # frozen: not tracked
        later = _Node()
        gone = weakref.ref(later)
        del later
        gc.collect()
        assert gone() is None
    finally:
        gc.unfreeze()
    assert any(o is before for o in gc.get_objects())


_SERVICE = """
import asyncio, os
from lazyload_common import tasks

class Settings:
    log_level = "WARNING"

async def run(settings, *, stop):
    async def consume():
        await asyncio.sleep(0.1)
        if os.environ["TEST_MODE"] == "fail":
            raise RuntimeError("consumer lost")
        await asyncio.Event().wait()

    task = tasks.create_guarded_task(consume(), name="consumer", stop=stop)
    print("ready", flush=True)
    await stop.wait()
    await tasks.cancel_and_wait(task)

tasks.run_main(run, Settings())
"""


def _start(tmp_path: Path, mode: str) -> subprocess.Popen[str]:
    script = tmp_path / "svc.py"
    script.write_text(_SERVICE)
    # a service takes no arguments (run_main refuses them): the mode goes in the environment
    return subprocess.Popen(
        [sys.executable, str(script)],
        env={**os.environ, "TEST_MODE": mode},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_fatal_task_makes_the_service_exit_non_zero(tmp_path: Path) -> None:
    """A consumer that dies stops the service; its supervisor must see a failure to restart it
    (the process used to exit with 0: #19)."""
    service = _start(tmp_path, "fail")
    _, stderr = service.communicate(timeout=30)
    assert service.returncode == 1
    assert stderr.splitlines()[-1] == (
        "svc.py: stopped because task consumer failed: RuntimeError('consumer lost')"
    )


def test_a_stop_by_sigterm_exits_zero(tmp_path: Path) -> None:
    service = _start(tmp_path, "run")
    assert service.stdout is not None and service.stdout.readline().strip() == "ready"
    service.send_signal(signal.SIGTERM)
    service.communicate(timeout=30)
    assert service.returncode == 0
