"""FenceChanged events from values (`changes`, no I/O).

Covers: an event carries the computed state, first-seen times of added learned hosts; a deleted
fence's event is one revision past the last and removes every host; `due` publishes a revision
once, diffs against the last event of the same fence, falls back to the cycle's own diff for a
name never published, announces every host for a new incarnation or after a deletion, and takes
the recorded state when another writer's revision was written; `deletion` is announced once;
the revision floor of a recreated fence; `Sent.of` reads an event back; the gauges count live
fences only.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from lazyload_fence_reconciler import changes, desiring, fences

NOW = 1_700_000_000.0
A = "a.default.svc.cluster.local"
B = "b.default.svc.cluster.local"
C = "c.default.svc.cluster.local"
SELECTOR = {"app": "productpage"}


def _fence(revision: int = 0, hosts: tuple[str, ...] = (), uid: str = "u1") -> fences.Fence:
    """A fence whose status records `hosts` (learned) at `revision`."""
    body = fences.new_fence_body("default", "productpage")
    body["metadata"]["uid"] = uid
    body["status"] = {
        "revision": revision,
        "domains": {h: {"hosts": [h], "status": "ACTIVE"} for h in hosts},
        "learned": {h: {"firstSeen": "2023-11-14T22:00:00Z"} for h in hosts},
        "enabled": True,
    }
    return fences.Fence.from_raw(body)


def _state(revision: int, *hosts: str) -> desiring.State:
    return desiring.State(revision=revision, enabled=True, workload_selector=None, hosts=hosts)


def _desired(
    revision: int, hosts: tuple[str, ...], *, added: tuple[str, ...] = (), changed: bool = True
) -> desiring.Desired:
    return desiring.Desired(
        state=_state(revision, *hosts),
        status={},
        changed=changed,
        write_needed=changed,
        added=added,
    )


def _edge(host: str) -> desiring.Edge:
    return desiring.Edge(host=host, port=9080, first_seen=NOW, observed_at=NOW)


def test_to_event_carries_the_state() -> None:
    fence = _fence()
    desired = desiring.desire(fence, [_edge(A)], service_selector=SELECTOR, now=NOW)
    event = changes.to_event(
        fence, desired.state, added=desired.added, removed=desired.removed, now=NOW
    )
    assert (event.namespace, event.name, event.uid, event.revision) == (
        "default",
        "productpage",
        "u1",
        1,
    )
    assert event.hosts == [A] and event.added == [A] and event.removed == []
    assert event.workload_selector == SELECTOR and event.enabled and not event.deleted
    assert event.reasons == {A: ["learned"]}


def test_to_event_carries_first_seen_of_added_learned_hosts_only() -> None:
    fence = _fence(3, (A, B))
    event = changes.to_event(fence, _state(4, A, B, C), added=(B, C), now=NOW)
    assert set(event.first_seen) == {B}  # C is not learned, A not added


def test_deleted_event_removes_every_host() -> None:
    event = changes.deleted_event(_fence(1, (A,)), None, now=NOW)
    assert event.deleted and not event.enabled and event.revision == 2
    assert event.hosts == [] and event.removed == [A]
    later = changes.deleted_event(_fence(1, (A,)), _state(7, A, B), now=NOW)
    assert later.revision == 8 and later.removed == [A, B]


LIVE = changes.Sent("u1", _state(2, A))


@pytest.mark.parametrize(
    ("case", "fence", "desired", "sent", "expected"),
    [
        ("no revision yet", _fence(0), _desired(0, ()), None, None),
        ("published already", _fence(2, (A,)), _desired(2, (A,), changed=False), LIVE, None),
        ("older than published", _fence(1, (A,)), _desired(1, (A,)), LIVE, None),
        # a new revision of the fence last published: the diff from that event
        ("diff from sent", _fence(3, (B,)), _desired(3, (B,)), LIVE, (3, (B,), (B,), (A,))),
        # a name never published: the cycle's own diff
        (
            "first, own diff",
            _fence(1, (A,)),
            _desired(1, (A, B), added=(B,)),
            None,
            (1, (A, B), (B,), ()),
        ),
        # another incarnation (uid) or after a deletion: every host is new
        (
            "other uid",
            _fence(1, (A,), uid="u2"),
            _desired(1, (A,)),
            LIVE,
            (1, (A,), (A,), ()),
        ),
        (
            "after deletion",
            _fence(3, (A,)),
            _desired(3, (A,)),
            replace(LIVE, deleted=True),
            (3, (A,), (A,), ()),
        ),
        # the written revision is not the computed one (another writer): the recorded state
        ("recorded wins", _fence(5, (C,)), _desired(4, (A,)), LIVE, (5, (C,), (C,), (A,))),
        # no event yet, and the cycle changed nothing (a fence written by a restart): all added
        (
            "unchanged, unpublished",
            _fence(2, (A,)),
            _desired(2, (A,), changed=False),
            None,
            (2, (A,), (A,), ()),
        ),
    ],
)
def test_due(case, fence, desired, sent, expected) -> None:
    event = changes.due(fence, desired, sent, now=NOW)
    if expected is None:
        assert event is None, case
        return
    assert event is not None, case
    revision, hosts, added, removed = expected
    assert (event.revision, tuple(event.hosts)) == (revision, hosts), case
    assert (tuple(event.added), tuple(event.removed)) == (added, removed), case
    assert event.uid == fence.uid and not event.deleted, case


def test_deletion_is_announced_once() -> None:
    fence = _fence(2, (A,))
    first = changes.deletion(fence, LIVE, now=NOW)
    assert first is not None and first.deleted and first.revision == 3
    assert first.removed == [A]  # the last published hosts, not the status's
    assert changes.deletion(fence, changes.Sent.of(first), now=NOW) is None
    unknown = changes.deletion(fence, None, now=NOW)
    assert unknown is not None and unknown.revision == 3 and unknown.removed == [A]


@pytest.mark.parametrize(
    ("sent", "uid", "floor"),
    [
        (None, "u1", 0),
        (LIVE, "u1", 0),  # the same fence: its own revisions go on
        (LIVE, "u2", 2),  # a recreated fence continues above the last published
        (replace(LIVE, deleted=True, state=_state(3)), "u2", 3),
    ],
)
def test_revision_floor(sent, uid, floor) -> None:
    assert changes.revision_floor(sent, uid) == floor


def test_sent_reads_an_event_back() -> None:
    event = changes.to_event(_fence(), _state(4, A, B), now=NOW)
    sent = changes.Sent.of(event)
    assert sent.uid == "u1" and not sent.deleted
    assert sent.state.essence() == _state(4, A, B).essence()
    assert sent.live("u1") and not sent.live("u2")


def test_published_counts_are_of_live_fences() -> None:
    disabled = changes.Sent("u3", replace(_state(1, C), enabled=False))
    sent = [LIVE, changes.Sent("u2", _state(4, A, B)), replace(LIVE, deleted=True), disabled]
    assert changes.fences_published(sent, enabled=True) == 2
    assert changes.fences_published(sent, enabled=False) == 1
    assert changes.hosts_published(sent) == 3  # A + A, B; not the deleted or disabled ones
