"""sidecar-writer end to end: a real nats-server, a Kubernetes API server, the real `run()`.

Covers: a FenceChanged becomes a Sidecar with exactly the expected hosts and a SidecarApplied is
published (and /readyz is green); a Sidecar lazyload does not manage is never overwritten; a
disabled fence deletes its Sidecar; a burst of 20 revisions of one fence gives few writes and ends
at the last revision; 500/429/409 answers are retried until success; an invalid render and a 422
are dead-lettered without writing; 403/401 for a while are retried until success; an older revision never overwrites a newer one; drift repair
restores a hand-edited and a hand-deleted managed Sidecar and removes one of a disabled fence;
the GitOps sink writes files instead of calling the API.

The API server is `kube_cluster` (the real kube-apiserver under `make test`); the tests that
inject faults ask for `kube_emulator` and run on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from lazyload_common import codec, events, jetstream, subjects
from lazyload_common.settings import AdminSettings, KubeSettings, NatsSettings
from lazyload_kube_emulator.faults import Verb
from lazyload_sidecar_writer import app
from lazyload_sidecar_writer.settings import SidecarSettings, WriterSettings
from lazyload_testing.kube import KubeEmulator, faster_than
from lazyload_testing.kube_real import RealKube
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from .conftest import make_fence

GROUP, VERSION, PLURAL = "networking.istio.io", "v1", "sidecars"
FENCE = ("microservice.slime.io", "v1alpha1")
SIDECARS_PATH = "/apis/networking.istio.io/v1/namespaces/default/sidecars"
UNMANAGED = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "Sidecar",
    "metadata": {"name": "productpage", "namespace": "default"},
    "spec": {"egress": [{"hosts": ["./*"]}]},
}
"""A Sidecar of productpage's name that lazyload does not manage (no labels of ours)."""


def _json(obj: object) -> dict[str, Any]:
    """A custom object as the client returns it (typed `object`; the decoded JSON object)."""
    assert isinstance(obj, dict)
    return obj


@dataclass
class Writer:
    """A running sidecar-writer and the handles a test needs around it."""

    js: JetStreamContext
    custom: client.CustomObjectsApi
    server: RealKube | KubeEmulator
    admin_port: int
    reports: asyncio.Queue[events.SidecarApplied] = field(default_factory=asyncio.Queue)

    async def publish(self, event: events.FenceChanged, *, forged: bool = False) -> None:
        """Publish `event` as the reconciler would: for a ServiceFence that exists (created on
        first use), with its uid. `forged`: exactly as given, fence or no fence."""
        if not forged:
            uid = await self.fence_uid(event.namespace, event.name)
            event = event.model_copy(update={"uid": uid})
        await jetstream.publish(self.js, subjects.fence(event.namespace, event.name), event)

    async def fence_uid(self, namespace: str = "default", name: str = "productpage") -> str:
        """The uid of ServiceFence `namespace/name`, created (empty) when missing."""
        try:
            fence: object = await asyncio.to_thread(
                self.custom.get_namespaced_custom_object, *FENCE, namespace, "servicefences", name
            )
        except ApiException as e:
            if e.status != 404:
                raise
            body = {
                "apiVersion": "/".join(FENCE),
                "kind": "ServiceFence",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"enable": True},
            }
            fence = await asyncio.to_thread(
                self.custom.create_namespaced_custom_object,
                *FENCE,
                namespace,
                "servicefences",
                body,
            )
        return str(_json(fence)["metadata"]["uid"])

    async def report(
        self, match: Callable[[events.SidecarApplied], bool] = lambda r: True, timeout: float = 10
    ) -> events.SidecarApplied:
        """The next SidecarApplied that matches (earlier ones are dropped)."""
        async with asyncio.timeout(timeout):
            while True:
                report = await self.reports.get()
                if match(report):
                    return report

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create the Sidecar `body` in `default` (as someone else would)."""
        created = await asyncio.to_thread(
            self.custom.create_namespaced_custom_object, GROUP, VERSION, "default", PLURAL, body
        )
        return _json(created)

    async def delete(self, name: str = "productpage") -> None:
        """Delete the Sidecar `default/name` (as someone else would)."""
        await asyncio.to_thread(
            self.custom.delete_namespaced_custom_object, GROUP, VERSION, "default", PLURAL, name
        )

    async def get(self, name: str = "productpage") -> dict[str, Any] | None:
        try:
            found = await asyncio.to_thread(
                self.custom.get_namespaced_custom_object, GROUP, VERSION, "default", PLURAL, name
            )
            return _json(found)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    async def settled(self, timeout: float = 10) -> None:
        """Wait until the writer's consumer has nothing pending or unacked."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                info = await self.js.consumer_info(subjects.FENCES_STREAM, "sidecar-writer")
                if info.num_pending == 0 and info.num_ack_pending == 0:
                    return
            await asyncio.sleep(0.05)
        raise TimeoutError("fence consumer did not settle")


def _settings(nats_url: str, server: RealKube | KubeEmulator, **sidecar: Any) -> WriterSettings:
    values: dict[str, Any] = {
        "repair_interval": 0,
        "retry_initial": 0.01,
        "retry_max": 0.1,
        "redelivery_delay": 0.2,
    }
    values.update(sidecar)
    return WriterSettings(
        nats=NatsSettings(url=nats_url),
        kube=KubeSettings(kubeconfig=server.kubeconfig),
        admin=AdminSettings(host="127.0.0.1", port=0),
        sidecar=SidecarSettings(**values),
    )


@contextlib.asynccontextmanager
async def running(
    settings: WriterSettings, server: RealKube | KubeEmulator
) -> AsyncIterator[Writer]:
    stop, ready = asyncio.Event(), asyncio.Event()
    ports: list[int] = []
    task = asyncio.create_task(app.run(settings, stop=stop, ready=ready, on_bound=ports.append))
    nc = await jetstream.connect(settings.nats, name="test")
    try:
        await asyncio.wait_for(ready.wait(), timeout=20)
        writer = Writer(
            nc.jetstream(), client.CustomObjectsApi(server.api_client()), server, ports[0]
        )

        async def collect(msg: Msg) -> None:
            writer.reports.put_nowait(codec.decode_as(msg.data, events.SidecarApplied))

        await nc.subscribe(f"{subjects.SIDECAR_PREFIX}.>", cb=collect)
        yield writer
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
        await nc.close()


@pytest.fixture
async def writer(nats_url: str, request: pytest.FixtureRequest) -> AsyncIterator[Writer]:
    """A writer on `kube_cluster`, or on `kube_emulator` for a test that asks for it (faults)."""
    wanted = "kube_emulator" if "kube_emulator" in request.fixturenames else "kube_cluster"
    server = request.getfixturevalue(wanted)
    async with running(_settings(nats_url, server), server) as w:
        yield w


async def test_fence_becomes_sidecar_with_exact_hosts(writer: Writer) -> None:
    await writer.publish(
        make_fence(revision=3, hosts=["reviews.default.svc.cluster.local", "test/*"])
    )
    report = await writer.report()
    expected = [
        "*/reviews.default.svc.cluster.local",
        "istio-system/*",
        "mesh-operator/*",
        "test/*",
    ]
    assert (report.action, report.revision, report.egress_hosts) == ("applied", 3, expected)
    stored = await writer.get()
    assert stored is not None
    assert stored["spec"] == {
        "workloadSelector": {"labels": {"app": "productpage"}},
        "egress": [{"hosts": expected}],
    }
    meta = stored["metadata"]
    assert meta["labels"] == {"app.kubernetes.io/managed-by": "lazyload"}
    assert meta["annotations"]["lazyload.io/fence-revision"] == "3"
    assert meta["ownerReferences"][0]["uid"] == await writer.fence_uid()
    assert report.resource_version == meta["resourceVersion"]
    async with httpx.AsyncClient() as http:
        ready = await http.get(f"http://127.0.0.1:{writer.admin_port}/readyz")
        metrics = await http.get(f"http://127.0.0.1:{writer.admin_port}/metrics")
    assert ready.status_code == 200 and ready.json()["checks"] == {"nats": True, "sink": True}
    assert 'lazyload_sidecar_writer_writes_total{action="create"}' in metrics.text


async def test_unmanaged_sidecar_is_not_overwritten(writer: Writer) -> None:
    theirs = UNMANAGED
    created = await writer.create(theirs)
    await writer.publish(make_fence(revision=1))
    report = await writer.report()
    assert report.action == "conflict" and "not managed by lazyload" in report.message
    await writer.publish(make_fence(revision=2, enabled=False))
    assert (await writer.report()).action == "conflict"
    stored = await writer.get()
    assert stored is not None
    assert stored["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    assert stored["spec"] == theirs["spec"]
    assert writer.server.writes(SIDECARS_PATH + "/") == []


async def test_disabled_fence_deletes_its_sidecar(writer: Writer) -> None:
    await writer.publish(make_fence(revision=1))
    assert (await writer.report()).action == "applied"
    await writer.publish(make_fence(revision=2, enabled=False))
    report = await writer.report()
    assert (report.action, report.revision, report.egress_hosts) == ("deleted", 2, [])
    assert await writer.get() is None
    await writer.publish(make_fence(revision=3, deleted=True))
    assert (await writer.report()).action == "deleted"  # already absent: still reported


async def test_read_errors_are_retried_until_success(
    nats_url: str, kube_emulator: KubeEmulator
) -> None:
    # with nothing remembered (written_cache 0) every cycle reads the stored Sidecar first
    async with running(_settings(nats_url, kube_emulator, written_cache=0), kube_emulator) as w:
        kube_emulator.inject_fault("GET", path_regex="/sidecars/", status=503, count=2)
        kube_emulator.clear_requests()
        await w.publish(make_fence(revision=2))
        report = await w.report()
        assert report.action == "applied" and report.revision == 2
        reads = [
            r.status for r in kube_emulator.requests() if r.verb == "GET" and "/sidecars/" in r.path
        ]
        assert reads[:2] == [503, 503] and reads[-1] in (200, 404)


async def test_burst_of_revisions_gives_few_writes(writer: Writer) -> None:
    hosts: list[str] = []
    for revision in range(1, 21):
        hosts.append(f"s{revision:02d}.default.svc.cluster.local")
        await writer.publish(make_fence(revision=revision, hosts=list(hosts)))
    await writer.report(lambda r: r.revision == 20, timeout=15)
    await writer.settled()
    writes = writer.server.writes("/sidecars")
    assert 1 <= len(writes) <= 6, [(w.verb, w.path) for w in writes]
    stored = await writer.get()
    assert stored is not None
    assert stored["metadata"]["annotations"]["lazyload.io/fence-revision"] == "20"
    assert len(stored["spec"]["egress"][0]["hosts"]) == 22


@pytest.mark.parametrize(
    ("verb", "status", "prepare"),
    [("POST", 500, False), ("POST", 429, False), ("PUT", 409, True)],
    ids=["500-on-create", "429-on-create", "409-on-replace"],
)
async def test_api_errors_are_retried_until_success(
    writer: Writer, kube_emulator: KubeEmulator, verb: Verb, status: int, prepare: bool
) -> None:
    if prepare:
        await writer.publish(make_fence(revision=1, hosts=[]))
        await writer.report()
    await writer.fence_uid()  # the ServiceFence exists before the requests are recorded
    kube_emulator.inject_fault(verb, path_regex="/sidecars", status=status, count=2)
    kube_emulator.clear_requests()
    await writer.publish(make_fence(revision=2))
    report = await writer.report()
    assert report.action == "applied" and report.revision == 2
    statuses = [
        r.status for r in kube_emulator.requests() if r.verb == verb and "/sidecars" in r.path
    ]
    assert statuses[:2] == [status, status] and statuses[-1] in (200, 201, 404)
    stored = await writer.get()
    assert (
        stored is not None
        and stored["metadata"]["annotations"]["lazyload.io/fence-revision"] == "2"
    )


async def _dead_letters(js: JetStreamContext, count: int) -> list[events.DeadLetter]:
    """The first `count` dead letters of the writer (waiting up to 5 s for them all)."""
    sub = await js.pull_subscribe(
        subjects.dead_letter("sidecar-writer"), durable="test-dlq", stream=subjects.DLQ_STREAM
    )
    found: list[events.DeadLetter] = []
    async with asyncio.timeout(5):
        while len(found) < count:
            msgs = await sub.fetch(count - len(found), timeout=5)
            found += [codec.decode_as(m.data, events.DeadLetter) for m in msgs]
    return found


async def test_invalid_render_is_dead_lettered_and_not_written(writer: Writer) -> None:
    await writer.publish(make_fence(revision=1, hosts=["UPPER.example.com"]))
    report = await writer.report()
    assert report.action == "dead-lettered" and "invalid-render" in report.message
    [letter] = await _dead_letters(writer.js, 1)
    assert letter.subject == subjects.fence("default", "productpage")
    assert "UPPER.example.com" in letter.reason
    assert await writer.get() is None
    assert writer.server.writes("/sidecars") == []


@pytest.mark.parametrize("status", [422, 413])
async def test_api_refusal_is_dead_lettered(
    writer: Writer, kube_emulator: KubeEmulator, status: int
) -> None:
    """Refusals no retry can change (an invalid or too large object) are dead-lettered with the
    reason, not retried for ever (#19)."""
    kube_emulator.inject_fault("POST", path_regex="/sidecars", status=status, count=1)
    await writer.publish(make_fence(revision=1))
    report = await writer.report()
    assert report.action == "dead-lettered" and "api-rejected" in report.message
    [letter] = await _dead_letters(writer.js, 1)
    assert str(status) in letter.reason
    await writer.settled()
    assert await writer.get() is None


@pytest.mark.parametrize("status", [403, 401])
async def test_api_denial_for_a_while_is_retried(
    writer: Writer, kube_emulator: KubeEmulator, status: int
) -> None:
    """RBAC and credentials change under a running writer (a Role re-applied, a token rotated):
    a write denied for a while is redelivered with back-off and the Sidecar is written; nothing
    is dead-lettered (`make faults`, api-403: dead-lettering at the first 403 lost edges)."""
    kube_emulator.inject_fault("POST", path_regex="/sidecars", status=status, count=2)
    await writer.publish(make_fence(revision=1))
    report = await writer.report(lambda r: r.action != "unchanged", timeout=20)
    assert report.action == "applied", report
    assert await writer.get() is not None
    assert [r.status for r in writer.server.writes("/sidecars")][:3] == [status, status, 201]
    await writer.settled()
    info = await writer.js.stream_info(subjects.DLQ_STREAM)
    assert info.state.messages == 0


async def test_older_revision_never_overwrites_newer(writer: Writer) -> None:
    await writer.publish(make_fence(revision=5, hosts=["new.default.svc.cluster.local"]))
    await writer.report()
    await writer.publish(make_fence(revision=3, hosts=["old.default.svc.cluster.local"]))
    await writer.publish(make_fence(revision=4, enabled=False))
    await writer.settled()
    stored = await writer.get()
    assert stored is not None
    assert stored["spec"]["egress"][0]["hosts"][0] == "*/new.default.svc.cluster.local"
    assert writer.reports.empty()  # stale events are not reported


async def test_drift_repair_restores_edited_and_deleted_sidecars(
    nats_url: str, kube_cluster: RealKube | KubeEmulator
) -> None:
    settings = _settings(nats_url, kube_cluster, repair_interval=0.3)
    async with running(settings, kube_cluster) as writer:
        await writer.publish(make_fence(revision=1))
        applied = await writer.report()
        stored = await writer.get()
        assert stored is not None
        stored["spec"]["egress"][0]["hosts"] = ["*/*"]
        await asyncio.to_thread(
            writer.custom.replace_namespaced_custom_object,
            GROUP,
            VERSION,
            "default",
            PLURAL,
            "productpage",
            stored,
        )
        repaired = await writer.report(lambda r: "drift repaired" in r.message)
        assert repaired.egress_hosts == applied.egress_hosts
        restored = await writer.get()
        assert (
            restored is not None and restored["spec"]["egress"][0]["hosts"] == applied.egress_hosts
        )
        await writer.delete()
        await writer.report(lambda r: "drift repaired" in r.message)
        assert await writer.get() is not None
        await writer.publish(make_fence(revision=2, enabled=False))
        await writer.report(lambda r: r.action == "deleted")
        orphan = dict(restored, metadata={**restored["metadata"]})
        del orphan["metadata"]["resourceVersion"]
        await writer.create(orphan)
        removed = await writer.report(lambda r: "drift repaired" in r.message)
        assert removed.action == "deleted" and await writer.get() is None


@contextlib.asynccontextmanager
async def _gitops_writer(nats_url: str, repo: Path) -> AsyncIterator[NATS]:
    """A running writer with the GitOps sink in `repo` (no API server at all), and a NATS
    client of the test's."""
    settings = WriterSettings(
        nats=NatsSettings(url=nats_url),
        admin=AdminSettings(host="127.0.0.1", port=0),
        sidecar=SidecarSettings(sink="gitops", gitops_dir=repo, repair_interval=0),
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(app.run(settings, stop=stop, ready=ready))
    nc = await jetstream.connect(settings.nats, name="test")
    try:
        await asyncio.wait_for(ready.wait(), timeout=20)
        yield nc
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
        await nc.close()


async def test_gitops_sink_writes_files_instead_of_the_api(nats_url: str, tmp_path: Path) -> None:
    async with _gitops_writer(nats_url, tmp_path / "repo") as nc:
        sub = await nc.subscribe(f"{subjects.SIDECAR_PREFIX}.>")
        await jetstream.publish(
            nc.jetstream(), subjects.fence("default", "productpage"), make_fence()
        )
        report = codec.decode_as((await sub.next_msg(timeout=10)).data, events.SidecarApplied)
        assert report.action == "applied"
        text = (tmp_path / "repo" / "default" / "productpage.yaml").read_text()
        assert "'*/details.default.svc.cluster.local'" in text


async def _refusals(writer: Writer) -> dict[str, float]:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{writer.admin_port}/metrics")).text
    prefix = 'lazyload_sidecar_writer_refused_total{reason="'
    return {
        line[len(prefix) :].split('"', 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(prefix)
    }


async def test_a_fence_event_without_its_fence_writes_nothing(writer: Writer) -> None:
    """A FenceChanged is only the word of whoever could publish it: for a ServiceFence that does
    not exist, or another incarnation of it (uid), no Sidecar is written; the event is refused,
    counted and dead-lettered (#16)."""
    before = await _refusals(writer)
    await writer.publish(make_fence(name="ghost", uid="uid-ghost", revision=1), forged=True)
    await writer.fence_uid("default", "productpage")
    await writer.publish(make_fence(uid="f0rged-uid", revision=1), forged=True)
    letters = await _dead_letters(writer.js, 2)
    reasons = sorted(letter.reason.split(":", 2)[1].strip() for letter in letters)
    assert reasons == ["uid-mismatch", "unknown-fence"]
    await writer.settled()
    assert writer.server.writes("/sidecars") == []
    assert writer.reports.empty()
    after = await _refusals(writer)
    assert after["unknown-fence"] == before["unknown-fence"] + 1
    assert after["uid-mismatch"] == before["uid-mismatch"] + 1
    await writer.publish(make_fence(revision=2))  # the real fence's own event: written
    assert (await writer.report()).action == "applied"


async def test_no_sidecar_in_a_namespace_lazyload_does_not_manage(writer: Writer) -> None:
    """kube-system (and the other namespaces of `sidecar.deny_namespaces`) never get a
    Sidecar, even for a fence that exists there (#16)."""
    before = await _refusals(writer)
    await writer.publish(make_fence(namespace="kube-system", name="coredns", revision=1))
    [letter] = await _dead_letters(writer.js, 1)
    assert "namespace-not-managed" in letter.reason
    await writer.settled()
    assert writer.server.writes("/sidecars") == []
    assert writer.reports.empty()
    after = await _refusals(writer)
    assert after["namespace-not-managed"] == before["namespace-not-managed"] + 1


async def test_a_deleted_fence_with_an_unusable_name_reaches_no_file(
    nats_url: str, tmp_path: Path
) -> None:
    """Deleted and disabled events are checked like any other: a namespace `../outside` would
    make the GitOps sink delete a file outside its directory (#16)."""
    outside = tmp_path / "outside" / "x.yaml"
    outside.parent.mkdir()
    outside.write_text("metadata:\n  labels: {app.kubernetes.io/managed-by: lazyload}\n")
    async with _gitops_writer(nats_url, tmp_path / "repo") as nc:
        js = nc.jetstream()
        for forged in (
            make_fence(namespace="../outside", name="x", deleted=True),
            make_fence(namespace="default", name="../../outside/x", enabled=False),
        ):
            await jetstream.publish(js, subjects.fence("default", "x"), forged)
        letters = await _dead_letters(js, 2)
        assert all("invalid-event" in letter.reason for letter in letters)
        assert outside.exists()


async def test_a_throttled_write_waits_the_servers_retry_after(
    writer: Writer, kube_emulator: KubeEmulator
) -> None:
    """A 429 with Retry-After: the writer's next attempt waits that long, not its own back-off
    (50 ms first), which would only add load to a throttled API server (#19)."""
    await writer.fence_uid()
    kube_emulator.inject_fault("POST", path_regex="/sidecars", status=429, count=1, retry_after=1)
    kube_emulator.clear_requests()
    await writer.publish(make_fence(revision=1))
    report = await writer.report()
    assert report.action == "applied"
    posts = [r for r in kube_emulator.requests() if r.verb == "POST" and "/sidecars" in r.path]
    assert [r.status for r in posts[:2]] == [429, 201]
    assert posts[1].time - posts[0].time >= 0.95


async def test_every_api_request_keeps_to_the_client_rate_limit(
    nats_url: str, kube_emulator: KubeEmulator
) -> None:
    """LAZYLOAD_KUBE__QPS/BURST bound every request of the writer: the fence checks, the
    Sidecar writes, the status reports and the probe (#18). (The ServiceFences are made first,
    and the results awaited on NATS: only the writer talks to the API meanwhile.)"""
    qps, burst, names = 10.0, 2, [f"svc-{i}" for i in range(5)]
    settings = _settings(nats_url, kube_emulator)
    settings = settings.model_copy(
        update={"kube": settings.kube.model_copy(update={"qps": qps, "burst": burst})}
    )
    async with running(settings, kube_emulator) as writer:
        fences = [make_fence(name=n, uid=await writer.fence_uid(name=n)) for n in names]
        kube_emulator.clear_requests()
        for fence in fences:
            await writer.publish(fence, forged=True)
        for _ in names:
            assert (await writer.report()).action == "applied"
        requests = kube_emulator.requests()
    assert len(kube_emulator.writes("/sidecars")) == len(names) and len(requests) >= 12
    assert not faster_than([r.time for r in requests], qps, burst)
