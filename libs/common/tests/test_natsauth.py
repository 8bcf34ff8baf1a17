"""NATS identities and their permissions (issue 16), against a real nats-server configured with
`natsauth.server_config`: each service identity does its job through the library's own calls
(streams, durable consumer, publish, dead letter, the ephemeral reader of fences) and is refused
what it must not do (a forged event on another service's subjects, another's streams or inbox);
the observer may only subscribe to fence and sidecar events; keys and settings are checked."""

from __future__ import annotations

import asyncio
import contextlib
import json
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from lazyload_common import errors, events, jetstream, natsauth, subjects
from lazyload_common.settings import NatsSettings
from lazyload_testing.nats import NatsServer, start_nats_server
from nats.aio.client import Client as NATS
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import StreamConfig
from nats.js.errors import NotFoundError


@pytest.fixture
def authorized(tmp_path: Path) -> Iterator[tuple[NatsServer, Path]]:
    """A nats-server with one NKey user per identity; (server, the seeds' directory)."""
    keys = tmp_path / "keys"
    users = natsauth.write_identities(keys)
    config = tmp_path / "nats.conf"
    config.write_text(natsauth.server_config(users))
    server = start_nats_server(tmp_path / "nats", config=config)
    try:
        yield server, keys
    finally:
        server.stop()


class _Client:
    """A connection as one identity, with the permission errors the server reported."""

    def __init__(self) -> None:
        self.refused: list[str] = []
        self.nc: Any = None

    async def on_error(self, e: Exception) -> None:
        self.refused.append(str(e))

    async def wait_refused(self, subject: str, timeout: float = 3.0) -> None:
        async with asyncio.timeout(timeout):
            while not any(
                subject.lower() in r.lower() and "permissions violation" in r.lower()
                for r in self.refused
            ):
                await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def _as(server: NatsServer, keys: Path, identity: str) -> AsyncIterator[_Client]:
    client = _Client()
    options = natsauth.connect_options(
        {
            "kind": "nkey",
            "seed_file": natsauth.seed_file(keys, identity),
            "inbox_prefix": natsauth.inbox_prefix(identity),
        }
    )
    client.nc = await nats.connect(server.url, error_cb=client.on_error, **options)
    try:
        yield client
    finally:
        await client.nc.close()


def _edge() -> events.DependencyObserved:
    return events.DependencyObserved(
        source_namespace="shop",
        source_name="cart",
        destination_host="pay.shop.svc.cluster.local",
        first_seen=1.0,
    )


def _fence() -> events.FenceChanged:
    return events.FenceChanged(namespace="shop", name="cart", revision=1, uid="u1")


async def _messages(server: NatsServer, keys: Path, stream: str) -> int:
    async with _as(server, keys, natsauth.ADMIN) as admin:
        try:
            info = await admin.nc.jetstream().stream_info(stream)
        except NotFoundError:
            return 0
        return int(info.state.messages)


async def test_each_service_does_its_job_as_its_own_identity(
    authorized: tuple[NatsServer, Path],
) -> None:
    """ingest -> deps -> reconciler (durable, acks) -> fence -> writer -> sidecar -> observer,
    every service connected through `jetstream.connect` with its seed file and service name."""
    server, keys = authorized

    def settings(identity: str) -> NatsSettings:
        return NatsSettings(url=server.url, nkey_seed_file=natsauth.seed_file(keys, identity))

    observed: list[str] = []
    async with _as(server, keys, natsauth.OBSERVER) as observer:
        for prefix in (subjects.FENCE_PREFIX, subjects.SIDECAR_PREFIX):

            async def seen(msg: Any) -> None:
                observed.append(msg.subject)

            await observer.nc.subscribe(f"{prefix}.>", cb=seen)
        ingest = await jetstream.connect(settings(natsauth.INGEST), name=natsauth.INGEST)
        reconciler = await jetstream.connect(
            settings(natsauth.RECONCILER), name=natsauth.RECONCILER
        )
        writer = await jetstream.connect(settings(natsauth.WRITER), name=natsauth.WRITER)
        try:
            ijs, rjs, wjs = ingest.jetstream(), reconciler.jetstream(), writer.jetstream()
            await jetstream.ensure_streams(ijs, names=[subjects.DEPS_STREAM])
            await jetstream.ensure_streams(
                rjs, names=[subjects.DEPS_STREAM, subjects.FENCES_STREAM, subjects.DLQ_STREAM]
            )
            await jetstream.ensure_streams(
                wjs, names=[subjects.FENCES_STREAM, subjects.SIDECARS_STREAM, subjects.DLQ_STREAM]
            )
            await jetstream.publish(ijs, subjects.deps("shop", "cart"), _edge(), msg_id="e1")
            edges = await _consume_one(rjs, natsauth.RECONCILER, subjects.DEPS_STREAM)
            assert edges[0].destination_host == "pay.shop.svc.cluster.local"
            await jetstream.publish(rjs, subjects.fence("shop", "cart"), _fence())
            await jetstream.dead_letter(
                rjs, service=natsauth.RECONCILER, reason="test", subject="s", payload=b"x"
            )
            fences = await _consume_one(wjs, natsauth.WRITER, subjects.FENCES_STREAM)
            assert fences[0].uid == "u1"
            sidecar = events.SidecarApplied(
                namespace="shop", name="cart", revision=1, action="applied"
            )
            await jetstream.publish(wjs, subjects.sidecar("shop", "cart"), sidecar)
            await jetstream.dead_letter(
                wjs, service=natsauth.WRITER, reason="test", subject="s", payload=b"x"
            )
            # both read the last event of every fence through an ephemeral consumer
            for js in (rjs, wjs):
                sub = await js.pull_subscribe(
                    f"{subjects.FENCE_PREFIX}.>", stream=subjects.FENCES_STREAM
                )
                assert len(await sub.fetch(1, timeout=5)) == 1
                info = await sub.consumer_info()
                await js.delete_consumer(subjects.FENCES_STREAM, info.name)
        finally:
            for nc in (ingest, reconciler, writer):
                await nc.close()
        async with asyncio.timeout(5):
            while len(observed) < 2:
                await asyncio.sleep(0.02)
    assert observed == ["lazyload.fence.shop.cart", "lazyload.sidecar.shop.cart"]
    assert await _messages(server, keys, subjects.DLQ_STREAM) == 2
    assert not jetstream.NATS_ERRORS.labels(natsauth.INGEST, "permission")._value.get()


async def _consume_one(js: Any, durable: str, stream: str) -> list[Any]:
    """One message through `jetstream.consume` with the service's durable (acked)."""
    got: list[Any] = []
    stop = asyncio.Event()
    prefix = subjects.DEPS_PREFIX if stream == subjects.DEPS_STREAM else subjects.FENCE_PREFIX
    model = events.DependencyObserved if stream == subjects.DEPS_STREAM else events.FenceChanged
    spec = jetstream.ConsumerSpec(
        stream=stream,
        durable=durable,
        filter_subject=f"{prefix}.>",
        service=durable,
        model=model,
        max_deliver=5,
    )

    async def handler(batch: list[jetstream.Delivery]) -> None:
        got.extend(d.event for d in batch)
        stop.set()

    await asyncio.wait_for(jetstream.consume(js, spec, handler, stop), 10)
    info = await js.consumer_info(stream, durable)
    for _ in range(100):
        if info.num_ack_pending == 0:
            break
        await asyncio.sleep(0.05)
        info = await js.consumer_info(stream, durable)
    assert info.num_ack_pending == 0 and info.delivered.stream_seq == 1
    return got


async def test_forged_events_and_foreign_streams_are_refused(
    authorized: tuple[NatsServer, Path],
) -> None:
    """The attacks of issue 16 with a service's own credentials: ingest forging a fence event,
    the reconciler a sidecar or a dependency event, the writer a fence event; nothing lands."""
    server, keys = authorized
    forged = {
        natsauth.INGEST: ["lazyload.fence.kube-system.x", "lazyload.dlq.sidecar-writer"],
        natsauth.RECONCILER: ["lazyload.sidecar.kube-system.x", "lazyload.deps.shop.cart"],
        natsauth.WRITER: ["lazyload.fence.kube-system.x", "lazyload.deps.shop.cart"],
    }
    for identity, targets in forged.items():
        async with _as(server, keys, identity) as client:
            for subject in targets:
                await client.nc.publish(subject, b"forged")
                await client.wait_refused(subject)
            # another service's streams: not even looked up
            if identity != natsauth.WRITER:
                await _api_refused(client, f"$JS.API.STREAM.CREATE.{subjects.SIDECARS_STREAM}")
            if identity != natsauth.RECONCILER:  # another's durable consumer
                await _api_refused(
                    client, f"$JS.API.CONSUMER.MSG.NEXT.{subjects.DEPS_STREAM}.fence-reconciler"
                )
            # another identity's replies (its fetched batches) are not readable
            await client.nc.subscribe("_INBOX.observer.>")
            await client.wait_refused("_INBOX.observer.>")
    for stream in (subjects.FENCES_STREAM, subjects.SIDECARS_STREAM, subjects.DEPS_STREAM):
        assert await _messages(server, keys, stream) == 0


async def _api_refused(client: _Client, subject: str) -> None:
    """A JetStream API request on `subject` is refused: no answer, and the server says why."""
    config = StreamConfig(name="STOLEN", subjects=["lazyload.deps.>"]).as_dict()
    with pytest.raises(NatsTimeoutError):
        await client.nc.request(subject, json.dumps(config).encode(), timeout=0.5)
    await client.wait_refused(subject)


async def test_observer_may_only_subscribe_to_fence_and_sidecar_events(
    authorized: tuple[NatsServer, Path],
) -> None:
    server, keys = authorized
    async with _as(server, keys, natsauth.OBSERVER) as observer:
        for subject in ("lazyload.fence.shop.cart", "lazyload.deps.shop.cart", "anything"):
            await observer.nc.publish(subject, b"forged")
            await observer.wait_refused(subject)
        await _api_refused(observer, "$JS.API.STREAM.CREATE.STOLEN")
        for subject in ("lazyload.deps.>", "lazyload.dlq.>", "_INBOX.>"):
            await observer.nc.subscribe(subject)
            await observer.wait_refused(subject)
    async with _as(server, keys, natsauth.ADMIN) as admin:
        with pytest.raises(NotFoundError):
            await admin.nc.jetstream().stream_info("STOLEN")


async def test_a_service_without_credentials_is_refused(
    authorized: tuple[NatsServer, Path], tmp_path: Path
) -> None:
    server, _ = authorized
    anonymous = NATS()
    with pytest.raises(Exception, match="Authorization Violation"):
        await anonymous.connect(server.url, max_reconnect_attempts=0, allow_reconnect=False)
    await anonymous.close()  # its socket is still open
    stranger = tmp_path / "stranger.nk"
    stranger.write_text(natsauth.new_seed())
    settings = NatsSettings(url=server.url, nkey_seed_file=stranger)
    with pytest.raises(errors.ConfigError, match="refused accesslog-ingest's credential"):
        await jetstream.connect(settings, name=natsauth.INGEST, wait=10)
    assert jetstream.NATS_ERRORS.labels(natsauth.INGEST, "authorization")._value.get() >= 1


def test_keys_are_private_files_and_the_config_names_every_identity(tmp_path: Path) -> None:
    users = natsauth.write_identities(tmp_path / "keys")
    assert set(users) == set(natsauth.IDENTITIES)
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    for identity, public in users.items():
        path = natsauth.seed_file(tmp_path / "keys", identity)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert natsauth.public_key(path.read_text().strip()) == public
        assert public.startswith("U")
    config = natsauth.server_config(users)
    assert all(public in config for public in users.values())
    observer = natsauth.permissions(natsauth.OBSERVER)
    assert observer is not None
    assert observer.as_server_config()["publish"] == {"deny": [">"]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"nkey_seed_file": "missing.nk"}, "nkey_seed_file: .* is not a readable file"),
        ({"nkey_seed_file": "bad.nk"}, "not an NKey user seed"),
        ({"nkey_seed_file": "good.nk", "user": "u"}, "set one way to authenticate"),
        ({"creds_file": "bad.nk"}, "holds no user JWT and seed"),
        ({"tls_cert_file": "good.nk"}, "set both or neither"),
        ({"password": "p"}, "password: needs user"),
    ],
)
def test_a_misconfigured_credential_is_a_start_up_error(
    tmp_path: Path, change: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "bad.nk").write_text("SAnotaseed\n")
    (tmp_path / "good.nk").write_text(natsauth.new_seed() + "\n")
    values = {k: (str(tmp_path / v) if k.endswith("_file") else v) for k, v in change.items()}
    environ = {f"LAZYLOAD_NATS__{k.upper()}": v for k, v in values.items()}
    from lazyload_common import settings as settings_module
    from pydantic_settings import BaseSettings

    class Service(BaseSettings):
        model_config = settings_module.service_config()
        nats: NatsSettings = NatsSettings()

    for variable, value in environ.items():
        monkeypatch.setenv(variable, value)
    with pytest.raises(errors.ConfigError, match=message):
        settings_module.from_environment(Service, environ)


def test_connect_options_for_each_credential_kind(tmp_path: Path) -> None:
    assert natsauth.connect_options({"kind": "nkey", "seed_file": "/s.nk"}) == {
        "nkeys_seed": "/s.nk"
    }
    assert natsauth.connect_options(
        {"kind": "creds", "creds_file": "/u.creds", "inbox_prefix": "_INBOX.x"}
    ) == {"user_credentials": "/u.creds", "inbox_prefix": "_INBOX.x"}
    assert natsauth.connect_options({"kind": "password", "user": "u", "password": "p"}) == {
        "user": "u",
        "password": "p",
    }
    with pytest.raises(ValueError, match="unknown NATS credential kind"):
        natsauth.connect_options({"kind": "token"})
    endpoints = {"nats_url": "nats://h:1", "nats_credentials": {"observer": {"kind": "x"}}}
    with pytest.raises(ValueError, match="no NATS credential for 'admin'"):
        natsauth.endpoint_options(endpoints, "admin")


async def test_tls_with_a_private_ca(tmp_path: Path) -> None:
    """LAZYLOAD_NATS__TLS_CA_FILE (and a client certificate for a server that verifies clients)
    reach a nats-server whose certificate only that CA signed; without the CA the connection is
    refused (the system CAs do not trust it), and without the client certificate too."""
    from lazyload_testing import certificates

    pki = certificates.issue_certificates(tmp_path / "pki")
    keys = tmp_path / "keys"
    users = natsauth.write_identities(keys, [natsauth.INGEST])
    tls = {
        "cert_file": str(pki.server_cert),
        "key_file": str(pki.server_key),
        "ca_file": str(pki.ca),
        "verify": True,
    }
    config = tmp_path / "nats.conf"
    config.write_text(natsauth.server_config(users, extra={"tls": tls}))
    server = start_nats_server(tmp_path / "nats", config=config)
    seed = natsauth.seed_file(keys, natsauth.INGEST)
    try:
        good = NatsSettings(
            url=server.url,
            nkey_seed_file=seed,
            tls_ca_file=pki.ca,
            tls_cert_file=pki.client_cert,
            tls_key_file=pki.client_key,
        )
        nc = await jetstream.connect(good, name=natsauth.INGEST, wait=10)
        assert nc.is_connected
        await nc.close()
        for bad in (
            good.model_copy(update={"tls_ca_file": None}),  # the server's CA is not trusted
            good.model_copy(update={"tls_cert_file": None, "tls_key_file": None}),
        ):
            with pytest.raises((TimeoutError, errors.ConfigError), match="NATS"):
                await jetstream.connect(bad, name=natsauth.INGEST, wait=2)
    finally:
        server.stop()
