"""Who may do what on lazyload's NATS: one identity per service, and an `observer`.

issue 16: a forged dependency or fence event must not be publishable by whoever reaches NATS. Each
service gets its own NKey user whose permissions allow only its job:

- accesslog-ingest publishes dependency events (`lazyload.deps.>`) and keeps its stream;
- fence-reconciler consumes them (its durable consumer) and publishes fence events and its dead
  letters;
- sidecar-writer consumes fence events and publishes sidecar events and its dead letters;
- `observer` (what a user or a dashboard gets) may only subscribe to `lazyload.fence.>` and
  `lazyload.sidecar.>`, and publish nothing: no JetStream API call at all;
- `admin` (the operator's own identity, never a service's) may do anything: the `nats` CLI,
  a benchmark's throwaway stream.

JetStream is used through the subjects of its API (`$JS.API.<...>`): each identity gets those of
its own streams and consumers only, and its replies only under its own inbox prefix
(`_INBOX.<identity>.>`, `inbox_prefix`), so no identity reads another's replies (a fetched batch is
a reply). `server_authorization` renders the nats-server `authorization` block; `connect_options`
turns an `endpoints.json` credential into `nats.connect` keyword arguments. This module decides
nothing about a running service; `jetstream.connect` uses the settings' files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lazyload_common import subjects

__all__ = [
    "ADMIN",
    "IDENTITIES",
    "INGEST",
    "OBSERVER",
    "RECONCILER",
    "SERVICES",
    "WRITER",
    "Permissions",
    "connect_options",
    "endpoint_options",
    "ensure_identities",
    "inbox_prefix",
    "new_seed",
    "permissions",
    "public_key",
    "seed_file",
    "server_authorization",
    "server_config",
    "write_identities",
]

INGEST, RECONCILER, WRITER = "accesslog-ingest", "fence-reconciler", "sidecar-writer"
SERVICES = (INGEST, RECONCILER, WRITER)
"""The services that connect to NATS (global-pilot does not)."""
OBSERVER = "observer"
ADMIN = "admin"
IDENTITIES = (*SERVICES, OBSERVER, ADMIN)

_API = "$JS.API"
_FILTERS = {subjects.FENCES_STREAM: f"{subjects.FENCE_PREFIX}.>"}
"""The filter subject of an ephemeral reader of a stream (nats-py puts it in the API subject)."""
_RECONCILER_DURABLE = RECONCILER  # lazyload_fence_reconciler.consuming.DURABLE
_WRITER_DURABLE = WRITER  # lazyload_sidecar_writer.consuming.DURABLE


@dataclass(frozen=True)
class Permissions:
    """Subjects an identity may publish to and subscribe to (NATS wildcards), and exceptions."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    publish_deny: tuple[str, ...] = ()

    def as_server_config(self) -> dict[str, Any]:
        publish: dict[str, list[str]] = {"allow": list(self.publish)} if self.publish else {}
        if self.publish_deny or not self.publish:
            publish["deny"] = list(self.publish_deny) or [">"]
        return {"publish": publish, "subscribe": {"allow": list(self.subscribe)}}


def inbox_prefix(identity: str) -> str:
    """The inbox prefix `identity` must connect with: its replies may only arrive under it."""
    return f"_INBOX.{identity}"


def _streams(*names: str) -> list[str]:
    """Look up, create and put right (`jetstream.ensure_streams`) the streams `names`."""
    return [f"{_API}.STREAM.{op}.{name}" for name in names for op in ("INFO", "CREATE", "UPDATE")]


def _durable(stream: str, durable: str) -> tuple[list[str], list[str]]:
    """Create, look up and pull from one durable consumer, ack its messages, and read a message
    it gave up on (the max-deliveries advisory, which it subscribes to): (publish, subscribe)."""
    publish = [
        f"{_API}.CONSUMER.DURABLE.CREATE.{stream}.{durable}",
        f"{_API}.CONSUMER.CREATE.{stream}.{durable}",
        f"{_API}.CONSUMER.CREATE.{stream}.{durable}.>",
        f"{_API}.CONSUMER.INFO.{stream}.{durable}",
        f"{_API}.CONSUMER.MSG.NEXT.{stream}.{durable}",
        f"$JS.ACK.{stream}.{durable}.>",
        f"{_API}.STREAM.MSG.GET.{stream}",
    ]
    subscribe = [f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{durable}"]
    return publish, subscribe


def _ephemeral(stream: str) -> list[str]:
    """Read a stream once through an ephemeral consumer (its name is the server's): create it,
    look it up, pull from it, delete it."""
    return [
        f"{_API}.CONSUMER.CREATE.{stream}",
        f"{_API}.CONSUMER.CREATE.{stream}.*.{_FILTERS[stream]}",
        f"{_API}.CONSUMER.INFO.{stream}.*",
        f"{_API}.CONSUMER.MSG.NEXT.{stream}.*",
        f"{_API}.CONSUMER.DELETE.{stream}.*",
    ]


def permissions(identity: str) -> Permissions | None:
    """What `identity` may do; None for `admin` (everything). KeyError for an unknown one."""
    inbox = f"{inbox_prefix(identity)}.>"
    deps, fences = f"{subjects.DEPS_PREFIX}.>", f"{subjects.FENCE_PREFIX}.>"
    sidecars = f"{subjects.SIDECAR_PREFIX}.>"
    if identity == INGEST:
        return Permissions(
            publish=(deps, *_streams(subjects.DEPS_STREAM)),
            # fence events make it forget the edges a reset dropped
            subscribe=(inbox, fences),
        )
    if identity == RECONCILER:
        pub, sub = _durable(subjects.DEPS_STREAM, _RECONCILER_DURABLE)
        return Permissions(
            publish=(
                fences,
                subjects.dead_letter(RECONCILER),
                *_streams(subjects.DEPS_STREAM, subjects.FENCES_STREAM, subjects.DLQ_STREAM),
                *pub,
                *_ephemeral(subjects.FENCES_STREAM),  # the last event of every fence
            ),
            subscribe=(inbox, *sub),
            # the wildcards of the ephemeral reader must not reach the writer's durable
            publish_deny=tuple(
                f"{_API}.CONSUMER.{op}.{subjects.FENCES_STREAM}.{_WRITER_DURABLE}{tail}"
                for op, tail in (("DELETE", ""), ("MSG.NEXT", ""), ("CREATE", ".>"))
            ),
        )
    if identity == WRITER:
        pub, sub = _durable(subjects.FENCES_STREAM, _WRITER_DURABLE)
        return Permissions(
            publish=(
                sidecars,
                subjects.dead_letter(WRITER),
                *_streams(subjects.FENCES_STREAM, subjects.SIDECARS_STREAM, subjects.DLQ_STREAM),
                *pub,
                *_ephemeral(subjects.FENCES_STREAM),  # the repair pass reads every fence
            ),
            subscribe=(inbox, *sub),
        )
    if identity == OBSERVER:
        return Permissions(publish=(), subscribe=(fences, sidecars))
    if identity == ADMIN:
        return None
    raise KeyError(f"no NATS identity {identity!r} (known: {', '.join(IDENTITIES)})")


def server_authorization(users: Mapping[str, str]) -> dict[str, Any]:
    """The nats-server `authorization` block: one NKey user per identity (identity -> its public
    key, `U...`) with that identity's permissions."""
    entries = []
    for identity, nkey in users.items():
        entry: dict[str, Any] = {"nkey": nkey}
        allowed = permissions(identity)
        if allowed is not None:
            entry["permissions"] = allowed.as_server_config()
        entries.append(entry)
    return {"users": entries}


def server_config(users: Mapping[str, str], *, extra: Mapping[str, Any] | None = None) -> str:
    """A nats-server configuration file with `server_authorization(users)` (and `extra` top-level
    settings). nats-server's format takes JSON values; quoted subjects keep their `$`."""
    lines = ["# Written by lazyload (lazyload_common.natsauth): one NKey user per identity."]
    for key, value in {**(extra or {}), "authorization": server_authorization(users)}.items():
        lines.append(f"{key}: {json.dumps(value, indent=2)}")
    return "\n".join(lines) + "\n"


def new_seed() -> str:
    """A new NKey user seed (`SU...`)."""
    import nkeys

    return str(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER).decode())


def public_key(seed: str) -> str:
    """The public key (`U...`) of a user seed; ValueError when `seed` is not a user seed."""
    import nkeys

    if not seed.startswith("SU"):
        raise ValueError("not an NKey user seed (it must start with SU)")
    try:
        # nkeys' KeyPair.public_key is the encoded key (bytes); untyped, it reads as nacl's VerifyKey
        key = nkeys.from_seed(bytearray(seed.encode())).public_key
        return str(key.decode())  # pyright: ignore[reportAttributeAccessIssue]
    except Exception as e:  # nkeys raises its own errors (and binascii's) for a damaged seed
        raise ValueError(f"not a valid NKey seed: {type(e).__name__}") from None


def write_identities(directory: Path, identities: Iterable[str] = IDENTITIES) -> dict[str, str]:
    """A new seed per identity in `directory/<identity>.nk` (mode 0600, the directory 0700);
    identity -> public key. Existing files are replaced: a run's keys are its own."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    users = {}
    for identity in identities:
        seed = new_seed()
        path = seed_file(directory, identity)
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(seed + "\n")
        users[identity] = public_key(seed)
    return users


def ensure_identities(directory: Path, identities: Iterable[str] = IDENTITIES) -> dict[str, str]:
    """Like `write_identities`, but an identity whose seed file already holds a user seed keeps
    it (a restarted compose project must not lock out the services that read the old keys)."""
    users, missing = {}, []
    for identity in identities:
        path = seed_file(directory, identity)
        try:
            users[identity] = public_key(path.read_text().strip())
        except (OSError, ValueError):
            missing.append(identity)
    if missing:
        users |= write_identities(directory, missing)
    return {identity: users[identity] for identity in identities}


def seed_file(directory: Path, identity: str) -> Path:
    return directory / f"{identity}.nk"


def connect_options(credential: Mapping[str, Any]) -> dict[str, Any]:
    """`nats.connect` keyword arguments for one `endpoints.json` `nats_credentials` entry:
    kind `nkey` -> `nkeys_seed` (the seed file), `creds` -> `user_credentials` (a .creds file),
    `password` -> `user` and `password`; and `inbox_prefix` when the entry names one."""
    kind = credential.get("kind")
    if kind == "nkey":
        options: dict[str, Any] = {"nkeys_seed": str(credential["seed_file"])}
    elif kind == "creds":
        options = {"user_credentials": str(credential["creds_file"])}
    elif kind == "password":
        options = {"user": credential["user"], "password": credential["password"]}
    else:
        raise ValueError(f"unknown NATS credential kind {kind!r} (nkey, creds or password)")
    if credential.get("inbox_prefix"):
        options["inbox_prefix"] = credential["inbox_prefix"]
    return options


def endpoint_options(endpoints: Mapping[str, Any], identity: str) -> dict[str, Any]:
    """`nats.connect` keyword arguments to reach the NATS of a `lazyload up` stack as `identity`,
    from its `endpoints.json` (`nats_url`, `nats_credentials`). A stack without
    `nats_credentials` runs NATS without authentication: then only the servers."""
    options: dict[str, Any] = {"servers": [endpoints["nats_url"]]}
    credentials = endpoints.get("nats_credentials")
    if credentials:
        if identity not in credentials:
            raise ValueError(
                f"endpoints.json has no NATS credential for {identity!r} "
                f"(it has {', '.join(sorted(credentials))})"
            )
        options.update(connect_options(credentials[identity]))
    return options
