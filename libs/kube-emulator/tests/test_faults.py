"""Fault injection and the request log (the emulator's admin API under `/emulator/v1`).

Covers: a fault failing exactly `count` matching requests with a proper Status body, matching by
verb and path regex only; 429 with a `Retry-After` header (and urllib3 retrying idempotent
requests on it by itself); an unlimited fault until cleared;
listing armed faults; the request log (verb, path, query, status, content type) for counting
API writes, and clearing it; reset to the start state; a malformed fault spec being refused; a delayed fault (an API server
timing out); expiring every open watch (410 Gone, history compacted).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from kubernetes.client import ApiException


def _cm(name: str) -> dict:
    return {"metadata": {"name": name}}


def test_fault_fails_count_matching_requests(kube_emulator, core):
    kube_emulator.inject_fault(
        "POST", r"/namespaces/default/configmaps$", status=500, count=2, reason="InternalError"
    )
    core.create_namespaced_service("default", {"metadata": {"name": "s"}, "spec": {}})
    for _ in range(2):
        with pytest.raises(ApiException) as err:
            core.create_namespaced_config_map("default", _cm("cm"))
        assert err.value.status == 500 and err.value.body is not None
        body = json.loads(err.value.body)
        assert body["kind"] == "Status" and body["reason"] == "InternalError"
    assert core.create_namespaced_config_map("default", _cm("cm")).metadata.name == "cm"
    assert core.list_namespaced_config_map("default").items


def test_429_carries_retry_after(kube_emulator, core):
    kube_emulator.inject_fault("POST", "/configmaps$", status=429, retry_after=3)
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("default", _cm("cm"))
    assert err.value.status == 429
    assert err.value.headers is not None and err.value.headers["Retry-After"] == "3"
    assert err.value.body is not None
    assert json.loads(err.value.body)["details"]["retryAfterSeconds"] == 3


def test_urllib3_retries_idempotent_429_transparently(kube_emulator, core):
    """Worth knowing when injecting 429/503 with Retry-After: the client retries GET/PUT/DELETE."""
    kube_emulator.clear_requests()
    kube_emulator.inject_fault("GET", "/api/v1/namespaces$", status=429, retry_after=0)
    assert core.list_namespace().items
    assert [(r.status, r.fault) for r in kube_emulator.requests()] == [(429, True), (200, False)]


def test_unlimited_fault_until_cleared(kube_emulator, core):
    kube_emulator.inject_fault("*", "configmaps", status=503, count=None)
    assert [f["status"] for f in kube_emulator.handle.faults()] == [503]
    for _ in range(3):
        with pytest.raises(ApiException) as err:
            core.list_namespaced_config_map("default")
        assert err.value.status == 503
    kube_emulator.clear_faults()
    assert core.list_namespaced_config_map("default").items == []


def test_request_log_counts_writes(kube_emulator, core):
    kube_emulator.clear_requests()
    core.create_namespaced_config_map("default", _cm("a"))
    core.patch_namespaced_config_map(
        "a", "default", {"data": {"k": "v"}}, _content_type="application/merge-patch+json"
    )
    with pytest.raises(ApiException):
        core.read_namespaced_config_map("missing", "default")
    log = kube_emulator.requests()
    assert [(r.verb, r.status) for r in log] == [("POST", 201), ("PATCH", 200), ("GET", 404)]
    assert log[1].content_type == "application/merge-patch+json"
    assert log[0].path == "/api/v1/namespaces/default/configmaps"
    assert [r.verb for r in kube_emulator.writes("configmaps")] == ["POST", "PATCH"]


def test_reset_restores_the_start_state(kube_emulator, core, custom):
    core.create_namespace({"metadata": {"name": "scratch"}})
    kube_emulator.inject_fault("DELETE", ".*", status=500, count=None)
    kube_emulator.reset()
    names = {n.metadata.name for n in core.list_namespace().items}
    assert "scratch" not in names and "default" in names
    assert kube_emulator.handle.faults() == []
    listed = custom.list_cluster_custom_object("networking.istio.io", "v1", "sidecars")
    assert listed["items"] == []


def test_bad_fault_spec_is_refused(kube_emulator):
    request = urllib.request.Request(
        f"{kube_emulator.url}/emulator/v1/faults",
        data=json.dumps({"status": 200}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=5)
    assert err.value.code == 422
    err.value.close()


def test_delayed_fault_holds_the_request_until_the_client_gives_up(kube_emulator, api, core):
    """`delay`: an API server timing out; a client with a shorter timeout never sees the status."""
    import time

    import urllib3

    kube_emulator.inject_fault("GET", "/configmaps$", status=504, count=None, delay=1.5)
    t0 = time.monotonic()
    with pytest.raises(urllib3.exceptions.MaxRetryError) as timed_out:  # after urllib3's retries
        core.list_namespaced_config_map("default", _request_timeout=0.3)
    assert isinstance(timed_out.value.reason, urllib3.exceptions.ReadTimeoutError)
    assert time.monotonic() - t0 < 1.4 * 4
    t0 = time.monotonic()
    with pytest.raises(ApiException) as err:
        core.list_namespaced_config_map("default", _request_timeout=5)
    assert err.value.status == 504 and time.monotonic() - t0 >= 1.4
    kube_emulator.clear_faults()
    assert core.list_namespaced_config_map("default").items == []


def test_expire_watches_ends_open_watches_with_410_and_compacts(kube_emulator, core):
    """`POST /emulator/v1/watches/expire`: every open watch gets an ERROR 410 (reason Expired)
    and ends; resuming from the resourceVersion it had is 410 too, a fresh list works."""
    import threading
    import time

    from kubernetes import watch

    rv = core.list_namespaced_config_map("default").metadata.resource_version
    core.create_namespaced_config_map("default", _cm("before"))
    seen: list[tuple[str, object]] = []
    errors: list[ApiException] = []

    def run() -> None:
        try:
            stream = watch.Watch().stream(
                core.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=10
            )
            for event in stream:
                assert isinstance(event, dict)  # a watch of objects: events, not log lines
                seen.append((event["type"], event["raw_object"]))
        except ApiException as e:
            errors.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline:
        time.sleep(0.02)
    assert kube_emulator.handle.expire_watches() == 1
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert [t for t, _ in seen] == ["ADDED"]
    assert errors and errors[0].status == 410  # the client raises the ERROR event
    with pytest.raises(ApiException) as err:
        next(watch.Watch().stream(core.list_namespaced_config_map, "default", resource_version=rv))
    assert err.value.status == 410
    assert [c.metadata.name for c in core.list_namespaced_config_map("default").items] == ["before"]


def test_request_log_marks_updates_that_changed_nothing(kube_emulator, core):
    """`unchanged`: a successful update that made no new resourceVersion (a duplicate write)."""
    created = core.create_namespaced_config_map("default", {**_cm("cm"), "data": {"a": "1"}})
    kube_emulator.clear_requests()
    same = core.replace_namespaced_config_map("cm", "default", created)
    assert same.metadata.resource_version == created.metadata.resource_version
    same.data = {"a": "2"}
    changed = core.replace_namespaced_config_map("cm", "default", same)
    assert changed.metadata.resource_version != created.metadata.resource_version
    puts = [r for r in kube_emulator.requests() if r.verb == "PUT"]
    assert [r.unchanged for r in puts] == [True, False]
