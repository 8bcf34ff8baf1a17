"""Deciding what to do with the stored Sidecar (pure): create, replace, delete, leave alone.

Covers: create when absent; unchanged when spec, labels, ownerReferences and the revision
annotation match (a newer revision with the same content moves only the annotation, the
high-water mark of every replica; the GitOps sink does not track it); replace on the stored resourceVersion, keeping finalizers and
foreign annotations; a Sidecar lazyload does not manage is never touched (write or delete); a stale
revision is ignored unless the ServiceFence was recreated (other uid); delete and already-absent.
"""

from __future__ import annotations

import copy
from typing import Any

from lazyload_sidecar_writer import planning, rendering

from .conftest import make_fence, make_settings

RawObject = dict[str, Any]


def _stored(revision: int = 1, **event: Any) -> RawObject:
    obj = rendering.render(make_fence(revision=revision, **event), make_settings())
    obj["metadata"]["resourceVersion"] = "42"
    return obj


def _desired(revision: int = 2, **event: Any) -> RawObject:
    return rendering.render(make_fence(revision=revision, **event), make_settings())


def test_create_when_absent() -> None:
    decision = planning.plan(make_fence(), _desired(), None)
    assert decision.action == "create" and decision.body == _desired()


def test_same_content_newer_revision_moves_only_the_annotation() -> None:
    decision = planning.plan(make_fence(revision=2), _desired(2), _stored(1))
    assert decision.action == "replace" and decision.resource_version == "42"
    assert decision.body is not None
    assert decision.body["metadata"]["annotations"]["lazyload.io/fence-revision"] == "2"
    assert decision.body["spec"] == _stored(1)["spec"]
    same = planning.plan(make_fence(revision=2), _desired(2), _stored(2))
    assert same.action == "unchanged" and same.resource_version == "42"
    untracked = planning.plan(make_fence(revision=2), _desired(2), _stored(1), track_revision=False)
    assert untracked.action == "unchanged"


def test_changed_hosts_replace_on_resource_version() -> None:
    event = make_fence(revision=2, hosts=["x.y.svc.cluster.local"])
    stored = _stored(1)
    stored["metadata"]["finalizers"] = ["example.com/keep"]
    stored["metadata"]["annotations"]["note"] = "hand"
    decision = planning.plan(event, _desired(2, hosts=["x.y.svc.cluster.local"]), stored)
    assert decision.action == "replace"
    assert decision.body is not None
    meta = decision.body["metadata"]
    assert meta["resourceVersion"] == "42"
    assert meta["finalizers"] == ["example.com/keep"]
    assert meta["annotations"] == {"note": "hand", "lazyload.io/fence-revision": "2"}
    assert decision.body["spec"]["egress"][0]["hosts"][0] == "*/x.y.svc.cluster.local"


def test_changed_labels_or_owner_replace() -> None:
    stored = _stored(2)
    stored["metadata"]["labels"]["istio.io/rev"] = "old"  # lazyload's own label, now wrong
    decision = planning.plan(make_fence(revision=2), _desired(2), stored)
    assert decision.action == "replace" and decision.body is not None
    assert "istio.io/rev" not in decision.body["metadata"]["labels"]
    stored = _stored(1)
    stored["metadata"]["ownerReferences"][0]["uid"] = "old-uid"
    assert planning.plan(make_fence(revision=2), _desired(2), stored).action == "replace"


def test_unknown_uid_keeps_stored_owner_reference() -> None:
    decision = planning.plan(make_fence(revision=1, uid=""), _desired(1, uid=""), _stored(1))
    assert decision.action == "unchanged"


def test_unmanaged_sidecar_is_never_touched() -> None:
    foreign = _stored(1)
    del foreign["metadata"]["labels"]["app.kubernetes.io/managed-by"]
    for desired in (_desired(), None):
        decision = planning.plan(make_fence(revision=2), desired, copy.deepcopy(foreign))
        assert decision.action == "conflict"
        assert "not managed by lazyload" in decision.message


def test_older_revision_is_stale() -> None:
    decision = planning.plan(make_fence(revision=3), _desired(3), _stored(5))
    assert decision.action == "stale" and decision.current_revision == 5
    assert planning.plan(make_fence(revision=3, enabled=False), None, _stored(5)).action == "stale"


def test_recreated_fence_restarts_revisions() -> None:
    event = make_fence(revision=1, uid="new-uid", hosts=[])
    decision = planning.plan(event, _desired(1, uid="new-uid", hosts=[]), _stored(5))
    assert decision.action == "replace"


def test_delete_and_absent() -> None:
    assert planning.plan(make_fence(revision=2, enabled=False), None, _stored(1)).action == "delete"
    absent = planning.plan(make_fence(deleted=True), None, None)
    assert absent.action == "absent" and "already absent" in absent.message


def test_labels_other_tools_put_are_kept_and_never_a_drift() -> None:
    """A labelling webhook or GitOps tool adds its label: no write for it (no ping-pong), and
    a write for a real change keeps it (#19)."""
    stored = _stored(2)
    stored["metadata"]["labels"]["team"] = "payments"
    assert planning.plan(make_fence(revision=2), _desired(2), stored).action == "unchanged"
    event = make_fence(revision=3, hosts=["x.y.svc.cluster.local"])
    decision = planning.plan(event, _desired(3, hosts=["x.y.svc.cluster.local"]), stored)
    assert decision.action == "replace" and decision.body is not None
    assert decision.body["metadata"]["labels"]["team"] == "payments"
    assert decision.body["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "lazyload"
