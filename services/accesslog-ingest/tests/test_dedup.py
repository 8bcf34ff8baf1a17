"""The edge memory (pure): admission, confirmation on ack, refresh, bounds.

- a new edge is admitted once, and is a duplicate while pending and within the refresh interval;
- it counts as published only after `confirm` (the JetStream ack); `release` lets it in again;
- after the refresh interval it is admitted again (REFRESH), once;
- the memory is an LRU bounded by `max_edges`: recently seen edges stay, old ones are forgotten
  and then admitted as NEW;
- the refresh-window index used in message ids.
"""

from __future__ import annotations

import pytest
from lazyload_accesslog_ingest.deduplicating import EdgeMemory, Verdict

NEW, REFRESH, DUP = Verdict.NEW, Verdict.REFRESH, Verdict.DUPLICATE


def memory(max_edges: int = 10, refresh: float = 300.0) -> EdgeMemory:
    return EdgeMemory(max_edges=max_edges, refresh_interval=refresh)


@pytest.mark.parametrize(
    ("steps", "verdicts"),
    [
        # (action, key, time): admit -> verdict; confirm/release -> None
        ([("admit", "a", 0), ("admit", "a", 1)], [NEW, DUP]),
        ([("admit", "a", 0), ("confirm", "a", 1), ("admit", "a", 2)], [NEW, None, DUP]),
        ([("admit", "a", 0), ("release", "a", 1), ("admit", "a", 2)], [NEW, None, NEW]),
        (
            [("admit", "a", 0), ("confirm", "a", 10), ("admit", "a", 309), ("admit", "a", 310)],
            [NEW, None, DUP, REFRESH],
        ),
        (
            [("admit", "a", 0), ("confirm", "a", 0), ("admit", "a", 300), ("admit", "a", 301)],
            [NEW, None, REFRESH, DUP],
        ),
        (
            # a refresh whose publish failed keeps the old time: admitted again next time
            [
                ("admit", "a", 0),
                ("confirm", "a", 0),
                ("admit", "a", 400),
                ("release", "a", 401),
                ("admit", "a", 402),
            ],
            [NEW, None, REFRESH, None, REFRESH],
        ),
        ([("admit", "a", 0), ("admit", "b", 0)], [NEW, NEW]),
    ],
)
def test_admission(steps: list[tuple[str, str, float]], verdicts: list[Verdict | None]) -> None:
    mem = memory()
    got = [
        mem.release(key) if action == "release" else getattr(mem, action)(key, at)
        for action, key, at in steps
    ]
    assert got == verdicts


def test_pending_count() -> None:
    mem = memory()
    mem.admit("a", 0)
    mem.admit("b", 0)
    assert mem.pending == 2
    mem.confirm("a", 1)
    mem.release("b")
    assert mem.pending == 0
    assert len(mem) == 1


def test_lru_bound_keeps_recently_seen_edges() -> None:
    mem = memory(max_edges=3)
    for key in "abc":
        mem.admit(key, 0)
        mem.confirm(key, 0)
    assert mem.admit("a", 1) is DUP  # touches a: b is now the oldest
    mem.admit("d", 2)
    mem.confirm("d", 2)
    assert len(mem) == 3
    assert mem.admit("b", 3) is NEW  # forgotten
    assert mem.admit("a", 3) is DUP
    assert mem.admit("c", 3) is DUP


def test_memory_never_exceeds_its_bound() -> None:
    mem = memory(max_edges=100)
    for i in range(1000):
        key = f"k{i}"
        assert mem.admit(key, i) is NEW
        mem.confirm(key, i)
        assert len(mem) <= 100


@pytest.mark.parametrize(
    ("now", "window"), [(0.0, 0), (299.9, 0), (300.0, 1), (1_700_000_000.0, 5_666_666)]
)
def test_window(now: float, window: int) -> None:
    assert memory().window(now) == window


def test_forget_drops_a_callers_edges_to_the_hosts_and_renames_them() -> None:
    memory = EdgeMemory(max_edges=10, refresh_interval=300)
    keys = [
        "default/productpage->details.default.svc.cluster.local:9080",
        "default/productpage->details.default.svc.cluster.local:",
        "default/productpage->reviews.default.svc.cluster.local:9080",
        "default/productpage-v2->details.default.svc.cluster.local:9080",
    ]
    for key in keys:
        memory.admit(key, 0.0)
        memory.confirm(key, 0.0)
    before = memory.msg_id(keys[0], 10.0)
    assert memory.forget("default/productpage", ["details.default.svc.cluster.local"]) == 2
    assert memory.admit(keys[0], 10.0) is Verdict.NEW and memory.admit(keys[1], 10.0) is Verdict.NEW
    assert memory.admit(keys[2], 10.0) is Verdict.DUPLICATE  # another host
    assert memory.admit(keys[3], 10.0) is Verdict.DUPLICATE  # another caller
    after = memory.msg_id(keys[0], 10.0)
    assert after != before and after.startswith(before)  # not a repeat for JetStream
    assert memory.msg_id(keys[2], 10.0) == f"{keys[2]}#0"
    assert memory.forget("default/productpage", ["nowhere.example.com"]) == 0
