"""Watch streams through `kubernetes.watch.Watch` on the official client.

Covers: replay of the events after a list's resourceVersion (namespaced and all-namespaces);
synthetic ADDED events for existing objects when no resourceVersion is given, then live events;
410 Gone (an ERROR event the client raises as ApiException 410) for a resourceVersion older than
the kept history; label-selected watches turning objects leaving/entering the selection into
DELETED/ADDED; field selectors; custom objects through `CustomObjectsApi`; BOOKMARK events with
`allowWatchBookmarks`; `sendInitialEvents` ending its initial ADDED events with an annotated
BOOKMARK; `timeoutSeconds` ending the stream.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from kubernetes import watch
from kubernetes.client import ApiException
from lazyload_kube_emulator import EmulatorConfig
from lazyload_testing.kube import KubeEmulator


@pytest.fixture
def kube_emulator_config() -> EmulatorConfig:
    return EmulatorConfig(history_size=20, bookmark_interval=0.2)


def _name(event: dict[str, Any]) -> str:
    obj = event["raw_object"]
    return obj.get("metadata", {}).get("name", "")


def collect(
    func: Callable[..., Any], *args: Any, count: int, timeout: int = 10, **kwargs: Any
) -> list[tuple[str, str]]:
    """The first `count` events (type, name) of a watch (or fewer if it times out)."""
    stream = watch.Watch()
    events: list[tuple[str, str]] = []
    for event in stream.stream(func, *args, timeout_seconds=timeout, **kwargs):
        assert isinstance(event, dict)  # a watch of objects: events, not log lines
        events.append((event["type"], _name(event)))
        if len(events) >= count:
            stream.stop()
            break
    return events


def _wait_for_watch(kube_emulator: KubeEmulator, before: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        watches = [r for r in kube_emulator.requests() if "watch=" in r.query]
        if len(watches) > before:
            return
        time.sleep(0.02)
    raise AssertionError("the watch never reached the emulator")


def live(
    kube_emulator: KubeEmulator,
    func: Callable[..., Any],
    *args: Any,
    count: int,
    changes: Callable[[], object],
    **kwargs: Any,
) -> list[tuple[str, str]]:
    """Start a watch in a thread, make `changes()` once it is open, return its events."""
    before = len([r for r in kube_emulator.requests() if "watch=" in r.query])
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(collect, func, *args, count=count, **kwargs)
        _wait_for_watch(kube_emulator, before)
        changes()
        return future.result(timeout=15)


def _svc(name: str, labels: dict | None = None) -> dict:
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": {"ports": [{"port": 80}]}}


def test_replay_from_resource_version(core):
    rv = core.list_namespaced_service("default").metadata.resource_version
    core.create_namespaced_service("default", _svc("a"))
    core.patch_namespaced_service("a", "default", {"metadata": {"labels": {"x": "1"}}})
    core.create_namespaced_service("istio-system", _svc("other"))
    core.delete_namespaced_service("a", "default")
    events = collect(core.list_namespaced_service, "default", count=3, resource_version=rv)
    assert events == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]
    everywhere = collect(core.list_service_for_all_namespaces, count=4, resource_version=rv)
    assert [e for e in everywhere if e[1] == "other"] == [("ADDED", "other")]


def test_without_resource_version_lists_then_streams(kube_emulator, core):
    core.create_namespaced_service("default", _svc("old"))
    events = live(
        kube_emulator,
        core.list_namespaced_service,
        "default",
        count=2,
        changes=lambda: core.create_namespaced_service("default", _svc("new")),
    )
    assert events == [("ADDED", "old"), ("ADDED", "new")]


def test_too_old_resource_version_is_410(core):
    rv = core.list_namespaced_config_map("default").metadata.resource_version
    for i in range(25):
        core.create_namespaced_config_map("default", {"metadata": {"name": f"cm{i}"}})
    with pytest.raises(ApiException) as err:
        collect(core.list_namespaced_config_map, "default", count=1, resource_version=rv)
    assert err.value.status == 410
    stream = watch.Watch().stream(core.list_namespaced_config_map, "default", resource_version=rv)
    with pytest.raises(ApiException) as retried:
        next(stream)
    assert retried.value.status == 410


def test_label_selected_watch_sees_objects_enter_and_leave(core):
    rv = core.list_namespaced_service("default").metadata.resource_version
    core.create_namespaced_service("default", _svc("s", {"team": "a"}))
    core.patch_namespaced_service("s", "default", {"metadata": {"labels": {"team": "b"}}})
    core.patch_namespaced_service("s", "default", {"metadata": {"labels": {"team": "a"}}})
    events = collect(
        core.list_namespaced_service,
        "default",
        count=3,
        resource_version=rv,
        label_selector="team=a",
    )
    assert events == [("ADDED", "s"), ("DELETED", "s"), ("ADDED", "s")]
    named = collect(
        core.list_namespaced_service, "default", count=1, field_selector="metadata.name=s"
    )
    assert named == [("ADDED", "s")]


def test_custom_object_watch(kube_emulator, custom, widgets, make_widget):
    args = (widgets, "v1", "default", "widgets")
    custom.create_namespaced_custom_object(*args, make_widget("w1"))

    def changes() -> None:
        custom.patch_namespaced_custom_object_status(*args, "w1", {"status": {"phase": "Ready"}})
        custom.delete_namespaced_custom_object(*args, "w1")

    events = live(
        kube_emulator, custom.list_namespaced_custom_object, *args, count=3, changes=changes
    )
    assert events == [("ADDED", "w1"), ("MODIFIED", "w1"), ("DELETED", "w1")]


def test_send_initial_events_ends_with_a_marked_bookmark(core):
    core.create_namespaced_service("default", _svc("x"))
    stream = watch.Watch()
    events = []
    for event in stream.stream(
        core.list_namespaced_service,
        "default",
        timeout_seconds=5,
        send_initial_events=True,
        allow_watch_bookmarks=True,
        resource_version_match="NotOlderThan",
    ):
        assert isinstance(event, dict)  # a watch of objects: events, not log lines
        events.append(event)
        if event["type"] == "BOOKMARK":
            stream.stop()
            break
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
    annotations = events[1]["raw_object"]["metadata"]["annotations"]
    assert annotations == {"k8s.io/initial-events-end": "true"}


def test_bookmarks_and_timeout(core):
    rv = core.list_namespaced_service("default").metadata.resource_version
    started = time.monotonic()
    events = collect(
        core.list_namespaced_service,
        "default",
        count=100,
        timeout=1,
        resource_version=rv,
        allow_watch_bookmarks=True,
    )
    assert 0.9 < time.monotonic() - started < 5
    assert events and {t for t, _ in events} == {"BOOKMARK"}
