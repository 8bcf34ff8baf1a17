"""The batch handler settles each fence event the way its outcome demands (sink faked).

The real sinks are exercised in test_writer.py (API emulator) and test_gitops.py (files); here a
recording sink isolates the handler's rules: latest revision wins within a batch, a fence written
within the coalescing window is held back (nak with the rest of the window), a fence without
selector is reported as a conflict and not written, an invalid render or an API refusal is
dead-lettered with a `dead-lettered` report, exhausted retries and failed reports are redelivered,
an older revision than one already processed (same ServiceFence uid) is ignored; each outcome
becomes the fence's `SidecarReady` condition (a deleted fence is forgotten), a failed status
report is redelivered, and the per-fence memory is bounded (LRU).
"""

from __future__ import annotations

from typing import Any

import pytest
from lazyload_common import errors as common_errors
from lazyload_common import events, jetstream
from lazyload_sidecar_writer import consuming, errors, reporting
from lazyload_sidecar_writer.bounded import Lru
from lazyload_sidecar_writer.rendering import RawObject
from lazyload_sidecar_writer.sinks import Result

from .conftest import make_fence, make_settings


class RecordingSink:
    def __init__(self, result: Result | Exception | None = None) -> None:
        self.calls: list[tuple[events.FenceChanged, RawObject | None]] = []
        self.result = result

    async def apply(self, event: events.FenceChanged, desired: RawObject | None) -> Result:
        self.calls.append((event, desired))
        if isinstance(self.result, Exception):
            raise self.result
        if self.result is not None:
            return self.result
        if desired is None:
            return Result("deleted", write="delete")
        return Result("applied", resource_version=str(event.revision), write="create")

    async def list_managed(self) -> list[RawObject]:
        return []  # no drift repair in these tests

    async def probe(self) -> bool:
        return True

    def forget(self, namespace: str, name: str) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _delivery(**fence: Any) -> jetstream.Delivery:
    return jetstream.Delivery(
        msg=None,  # type: ignore[arg-type]  # no message: the tests call the handler, none is acked
        event=make_fence(**fence),
    )


def _handler(
    sink: RecordingSink, *, window: float = 0.0, publish_error: Exception | None = None
) -> tuple[consuming.FenceHandler, list[events.SidecarApplied], Clock]:
    reports: list[events.SidecarApplied] = []
    clock = Clock()

    async def publish(report: events.SidecarApplied) -> None:
        if publish_error is not None:
            raise publish_error
        reports.append(report)

    settings = make_settings(coalesce_window=window)
    return consuming.FenceHandler(settings, sink, publish, clock=clock), reports, clock


def test_latest_revision_per_fence_wins() -> None:
    batch = [
        _delivery(revision=1),
        _delivery(revision=3),
        _delivery(revision=2),
        _delivery(name="reviews", revision=1),
        _delivery(revision=3),
    ]
    winners, superseded = consuming.latest_per_fence(batch)
    assert winners == [batch[4], batch[3]]
    assert sorted(d.event.revision for d in superseded) == [1, 2, 3]


async def test_batch_writes_once_per_fence_and_reports() -> None:
    sink = RecordingSink()
    handler, reports, _ = _handler(sink)
    batch = [_delivery(revision=r) for r in range(1, 6)]
    await handler(batch)
    assert [c[0].revision for c in sink.calls] == [5]
    assert all(d.error is None for d in batch)  # superseded ones are acked too
    [report] = reports
    assert (report.action, report.revision, report.resource_version) == ("applied", 5, "5")
    assert report.egress_hosts[0] == "*/details.default.svc.cluster.local"


async def test_disabled_and_deleted_fences_delete() -> None:
    sink = RecordingSink()
    handler, reports, _ = _handler(sink)
    await handler([_delivery(enabled=False), _delivery(name="b", deleted=True)])
    assert [desired for _, desired in sink.calls] == [None, None]
    assert [r.action for r in reports] == ["deleted", "deleted"]


@pytest.mark.parametrize(
    "fence",
    [
        {"namespace": "../etc", "deleted": True},
        {"namespace": "default", "name": "a/../../b", "enabled": False},
        {"namespace": "Default"},
        {"uid": "uid/../x"},
        {"namespace": "kube-system"},
        {"namespace": "kube-node-lease", "deleted": True},
    ],
)
async def test_unusable_or_unmanaged_fences_are_refused_whatever_they_ask(
    fence: dict[str, Any],
) -> None:
    """Deleted and disabled events are checked too: their namespace and name would become API
    and file paths; Kubernetes' own namespaces get no Sidecar of lazyload's (#16)."""
    sink = RecordingSink()
    handler, reports, _ = _handler(sink)
    delivery = _delivery(**fence)
    await handler([delivery])
    assert sink.calls == [] and reports == []
    assert isinstance(delivery.error, common_errors.PermanentError)  # dead-lettered
    assert str(delivery.error).startswith(("invalid-event:", "namespace-not-managed:"))


async def test_namespaces_follow_allow_and_deny() -> None:
    sink = RecordingSink()
    settings = make_settings(allow_namespaces=["shop"], deny_namespaces=[])

    async def publish(report: events.SidecarApplied) -> None:
        return None

    handler = consuming.FenceHandler(settings, sink, publish)
    shop, default, system = (
        _delivery(namespace="shop"),
        _delivery(namespace="default"),
        _delivery(namespace="kube-system"),
    )
    await handler([shop, default, system])
    assert [event.namespace for event, _ in sink.calls] == ["shop"]
    assert shop.error is None
    assert str(default.error).startswith("namespace-not-managed:")
    assert str(system.error).startswith("namespace-not-managed:")


async def test_no_selector_is_reported_and_not_written() -> None:
    sink = RecordingSink()
    handler, reports, _ = _handler(sink)
    delivery = _delivery(workload_selector=None)
    await handler([delivery])
    assert sink.calls == [] and delivery.error is None
    [report] = reports
    assert report.action == "conflict" and "no workload selector" in report.message


async def test_invalid_render_is_dead_lettered_and_never_applied() -> None:
    sink = RecordingSink()
    handler, reports, _ = _handler(sink)
    delivery = _delivery(hosts=["NOT A HOST"])
    await handler([delivery])
    assert sink.calls == []
    assert isinstance(delivery.error, common_errors.PermanentError)
    assert str(delivery.error).startswith("invalid-render")
    assert [r.action for r in reports] == ["dead-lettered"]


async def test_api_refusal_is_dead_lettered() -> None:
    handler, reports, _ = _handler(RecordingSink(errors.ApiRejected("422 Invalid")))
    delivery = _delivery()
    await handler([delivery])
    assert isinstance(delivery.error, common_errors.PermanentError)
    assert "api-rejected" in str(delivery.error)
    assert [r.action for r in reports] == ["dead-lettered"]


@pytest.mark.parametrize(
    "failure",
    [errors.RetriesExhausted("503 x", delay=7.0), RuntimeError("boom")],
    ids=["retries-exhausted", "unexpected"],
)
async def test_failures_are_redelivered(failure: Exception) -> None:
    handler, reports, _ = _handler(RecordingSink(failure))
    delivery = _delivery()
    await handler([delivery])
    assert isinstance(delivery.error, common_errors.TemporaryError)
    assert delivery.error.delay == (7.0 if isinstance(failure, errors.RetriesExhausted) else 5.0)
    assert reports == []


async def test_failed_report_is_redelivered() -> None:
    handler, _, _ = _handler(RecordingSink(), publish_error=OSError("nats down"))
    delivery = _delivery()
    await handler([delivery])
    assert isinstance(delivery.error, common_errors.TemporaryError)
    assert "publish SidecarApplied" in str(delivery.error)


async def test_stale_revision_is_acked_without_report() -> None:
    handler, reports, _ = _handler(RecordingSink(Result("stale", message="older")))
    delivery = _delivery()
    await handler([delivery])
    assert delivery.error is None and reports == []


async def test_coalescing_window_holds_back_a_fence_written_just_now() -> None:
    sink = RecordingSink()
    handler, _, clock = _handler(sink, window=0.1)
    await handler([_delivery(revision=1)])
    clock.now += 0.03
    held, other = _delivery(revision=2), _delivery(name="reviews", revision=1)
    await handler([held, other])
    assert isinstance(held.error, common_errors.TemporaryError)
    assert held.error.delay == pytest.approx(0.07)
    assert other.error is None  # another fence is not held back
    clock.now += 0.1
    again = _delivery(revision=2)
    await handler([again])
    assert again.error is None
    assert [(c[0].name, c[0].revision) for c in sink.calls] == [
        ("productpage", 1),
        ("reviews", 1),
        ("productpage", 2),
    ]


async def test_unchanged_result_does_not_start_a_window() -> None:
    sink = RecordingSink(Result("unchanged", resource_version="9"))
    handler, reports, _ = _handler(sink, window=0.1)
    first, second = _delivery(revision=1), _delivery(revision=2)
    await handler([first])
    await handler([second])
    assert first.error is None and second.error is None
    assert [r.action for r in reports] == ["unchanged", "unchanged"]


async def test_older_revision_after_a_processed_newer_one_is_stale() -> None:
    """Revision 6 left the Sidecar unchanged; a redelivered 5 must not be applied after it."""
    sink = RecordingSink(Result("unchanged", resource_version="9"))
    handler, reports, _ = _handler(sink)
    await handler([_delivery(revision=6)])
    late = _delivery(revision=5, hosts=["other.default.svc.cluster.local"])
    await handler([late])
    assert late.error is None
    assert [c[0].revision for c in sink.calls] == [6]
    assert [r.revision for r in reports] == [6]
    recreated = _delivery(revision=1, uid="new-uid")  # a new ServiceFence restarts revisions
    await handler([recreated])
    assert [c[0].revision for c in sink.calls] == [6, 1]


class RecordingReporter:
    def __init__(self, error: Exception | None = None) -> None:
        self.reports: list[tuple[int, reporting.Condition]] = []
        self.forgotten: list[str] = []
        self.error = error

    async def report(self, event: events.FenceChanged, condition: reporting.Condition) -> None:
        if self.error is not None:
            raise self.error
        self.reports.append((event.revision, condition))

    def forget(self, event: events.FenceChanged) -> None:
        self.forgotten.append(event.name)


def _reporting_handler(
    sink: RecordingSink, reporter: RecordingReporter, **sidecar: Any
) -> tuple[consuming.FenceHandler, list[events.SidecarApplied]]:
    reports: list[events.SidecarApplied] = []

    async def publish(report: events.SidecarApplied) -> None:
        reports.append(report)

    settings = make_settings(**{"coalesce_window": 0, **sidecar})
    return consuming.FenceHandler(settings, sink, publish, reporter=reporter), reports


async def test_outcomes_become_the_fence_condition() -> None:
    conflict = Result("conflict", message="not managed by lazyload", reason="SidecarConflict")
    sink, reporter = RecordingSink(conflict), RecordingReporter()
    handler, _ = _reporting_handler(sink, reporter)
    await handler([_delivery(revision=1)])
    sink.result = None
    await handler([_delivery(revision=2)])
    await handler([_delivery(revision=3, workload_selector=None)])
    await handler([_delivery(revision=4, enabled=False)])
    await handler([_delivery(revision=5, hosts=["NOT A HOST"])])
    await handler([_delivery(revision=6, deleted=True)])
    assert [(r, c.status, c.reason) for r, c in reporter.reports] == [
        (1, "False", "SidecarConflict"),
        (2, "True", "SidecarApplied"),
        (3, "False", "NoWorkloadSelector"),
        (4, "False", "FenceDisabled"),
        (5, "False", "InvalidSidecar"),
    ]
    assert reporter.forgotten == ["productpage"]  # a deleted fence has no status to keep


async def test_failed_status_report_is_redelivered() -> None:
    reporter = RecordingReporter(common_errors.TemporaryError("503", delay=1.0))
    handler, reports = _reporting_handler(RecordingSink(), reporter)
    delivery = _delivery()
    await handler([delivery])
    assert isinstance(delivery.error, common_errors.TemporaryError) and reports == []


async def test_per_fence_memory_is_bounded() -> None:
    sink = RecordingSink()
    handler, _ = _reporting_handler(
        sink, RecordingReporter(), max_tracked_fences=16, coalesce_window=10.0
    )
    for i in range(100):
        await handler([_delivery(name=f"f{i}", revision=1)])
    assert len(handler._processed) == 16 and len(handler._last_write) == 16
    assert ("default", "f99") in handler._last_write and (
        "default",
        "f0",
    ) not in handler._last_write


def test_lru_forgets_the_least_recently_used() -> None:
    lru: Lru[str, int] = Lru(2)
    lru.set("a", 1)
    lru.set("b", 2)
    assert lru.get("a") == 1  # a is now the most recent
    lru.set("c", 3)
    assert list(lru) == ["a", "c"] and lru.get("b") is None
    assert lru.pop("a") == 1 and lru.pop("a") is None and len(lru) == 1
    with pytest.raises(ValueError):
        Lru(0)
