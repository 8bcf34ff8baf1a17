"""NATS of `lazyload up` (issue 16): authentication is on, every service runs as its own NKey
identity, `endpoints.json` names each identity's credential (`nats_credentials`), and over the
running stack each identity does its job and is refused the rest: a dependency event published
with ingest's key becomes a fence and a Sidecar that the observer sees; ingest forging a fence
event, the observer publishing or creating a stream, and a client without a key are refused, and
nothing they sent lands anywhere."""

from __future__ import annotations

import asyncio
import contextlib
import json
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from lazyload_cli.stack import Stack
from lazyload_common import codec, events, jetstream, natsauth, subjects
from lazyload_common.kube import KubeApi, KubeConflict, api_client
from lazyload_common.settings import KubeSettings
from nats.aio.client import Client as NATS
from nats.errors import TimeoutError as NatsTimeoutError

pytestmark = pytest.mark.e2e

CALLER, DEST = "nats-caller", "nats-dest"


@contextlib.asynccontextmanager
async def _as(stack: Stack, identity: str, refused: list[str]) -> AsyncIterator[Any]:
    async def on_error(e: Exception) -> None:
        refused.append(str(e).lower())

    options = natsauth.endpoint_options(stack.endpoints, identity)
    nc = await nats.connect(error_cb=on_error, **options)
    try:
        yield nc
    finally:
        await nc.close()


async def _until(probe: Any, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not probe():
            await asyncio.sleep(0.05)


def _services(stack: Stack) -> None:
    kube = KubeApi(api_client(KubeSettings(kubeconfig=stack.kubeconfig)))
    for name in (CALLER, DEST):
        with contextlib.suppress(KubeConflict):
            kube.create(
                "/api/v1/namespaces/default/services",
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": name, "namespace": "default"},
                    "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80}]},
                },
            )
    kube.api.close()


def test_endpoints_name_a_private_key_per_identity(stack: Stack) -> None:
    written = json.loads((Path(stack.config.state_dir) / "endpoints.json").read_text())
    credentials = written["nats_credentials"]
    assert set(credentials) == set(natsauth.IDENTITIES)
    for identity, credential in credentials.items():
        assert credential["kind"] == "nkey"
        assert credential["inbox_prefix"] == f"_INBOX.{identity}"
        seed = Path(credential["seed_file"])
        assert stat.S_IMODE(seed.stat().st_mode) == 0o600
        natsauth.public_key(seed.read_text().strip())  # a user seed


def test_each_identity_does_its_job_and_is_refused_the_rest(stack: Stack) -> None:
    _services(stack)
    asyncio.run(_jobs_and_refusals(stack))
    # the services themselves were never refused anything
    for name in natsauth.SERVICES:
        body = httpx.get(f"{stack.endpoints['admin'][name]}/metrics").text
        assert 'lazyload_nats_errors_total{kind="permission"' not in body, name


async def _jobs_and_refusals(stack: Stack) -> None:
    refused: list[str] = []
    seen: list[Any] = []
    host = f"{DEST}.default.svc.cluster.local"
    async with (
        _as(stack, natsauth.OBSERVER, refused) as observer,
        _as(stack, natsauth.INGEST, refused) as ingest,
    ):

        async def on_event(msg: Any) -> None:
            seen.append(codec.decode(msg.data))

        await observer.subscribe(f"{subjects.FENCE_PREFIX}.default.{CALLER}", cb=on_event)
        await observer.subscribe(f"{subjects.SIDECAR_PREFIX}.default.{CALLER}", cb=on_event)
        await observer.flush()
        # ingest's job: a dependency event, acked by JetStream
        edge = events.DependencyObserved(
            source_namespace="default",
            source_name=CALLER,
            destination_host=host,
            destination_port=80,
            destination_namespace="default",
            destination_service=DEST,
            first_seen=time.time(),
        )
        await jetstream.publish(ingest.jetstream(), subjects.deps("default", CALLER), edge)
        # the reconciler's (a fence event) and the writer's (a sidecar event), seen by observer
        await _until(
            lambda: any(
                isinstance(e, events.SidecarApplied) and f"*/{host}" in e.egress_hosts for e in seen
            ),
            timeout=30,
        )
        assert any(isinstance(e, events.FenceChanged) and host in e.hosts for e in seen)

        # the attacks: a forged fence event with ingest's key, anything from the observer
        forged = f"{subjects.FENCE_PREFIX}.kube-system.coredns"
        await ingest.publish(forged, b"forged")
        await observer.publish(f"{subjects.DEPS_PREFIX}.default.{CALLER}", b"forged")
        with pytest.raises(NatsTimeoutError):
            await observer.request("$JS.API.STREAM.CREATE.STOLEN", b"{}", timeout=0.5)
        await _until(lambda: sum("permissions violation" in r for r in refused) >= 3, timeout=5)
    for subject in (forged, "lazyload.deps.default.nats-caller", "$js.api.stream.create.stolen"):
        assert any(subject in r for r in refused), (subject, refused)
    anonymous = NATS()
    with pytest.raises(Exception, match="Authorization Violation"):
        await anonymous.connect(stack.endpoints["nats_url"], allow_reconnect=False)
    await anonymous.close()  # a refused connect keeps its socket open otherwise
    async with _as(stack, natsauth.ADMIN, refused) as admin:
        js = admin.jetstream()
        fences = await js.stream_info(subjects.FENCES_STREAM, subjects_filter=">")
        assert forged not in (fences.state.subjects or {})
        names = [s.config.name for s in await js.streams_info()]
        assert "STOLEN" not in names
