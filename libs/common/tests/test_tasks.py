"""`tasks.settle_heap`: what is alive at a service's start is frozen out of the collector's sight,
and what comes later is still collected."""

from __future__ import annotations

import gc
import weakref

from lazyload_common import tasks


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


def test_settle_heap_freezes_the_start_and_leaves_the_rest_collectable() -> None:
    before = _Node()
    try:
        tasks.settle_heap()
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
