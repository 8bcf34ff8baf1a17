"""Test hygiene: a test that leaves asyncio tasks running fails.

`no_leaked_tasks` is given to every coroutine test by the plugin (`pytest_collection_modifyitems`),
before its other fixtures, so that it is torn down after them: whatever task the test or its
fixtures started and did not end by then (a consumer never stopped, a client never closed) is
named in the failure, then cancelled. Only the test's own event loop is looked at.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

GRACE_SECONDS = 1.0
"""How long tasks that are ending (cancelled, or finishing a last await) get before they count."""


def _describe(task: asyncio.Task[object]) -> str:
    coro = task.get_coro()
    where = getattr(coro, "__qualname__", None) or repr(coro)
    return f"{task.get_name()} ({where})"


@pytest.fixture
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fail the test if tasks it started are still running when its fixtures are torn down."""
    before = asyncio.all_tasks()
    yield
    me = asyncio.current_task()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + GRACE_SECONDS
    while True:
        leaked = [t for t in asyncio.all_tasks() if t is not me and t not in before]
        if not leaked or loop.time() >= deadline:
            break
        await asyncio.wait(leaked, timeout=deadline - loop.time())
    if not leaked:
        return
    names = sorted(_describe(t) for t in leaked)
    for task in leaked:
        task.cancel()
    await asyncio.wait(leaked, timeout=GRACE_SECONDS)
    pytest.fail(f"the test left {len(leaked)} asyncio task(s) running: {', '.join(names)}")
