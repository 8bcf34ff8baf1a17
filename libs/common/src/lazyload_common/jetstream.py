"""JetStream helpers: connect, create the streams idempotently, publish, and the one consume loop.

The consume loop is the only place that acks. A handler gets a batch of decoded deliveries and marks
the ones it could not process (`reject` = permanent: dead-letter + term; `retry` = nak with delay);
the rest are acked after the handler returned, i.e. after their effect is durable. Payloads that do
not decode are dead-lettered before the handler sees them, so one bad message never blocks others.
While a handler works, the batch's ack deadline is pushed back (`in_progress`) every half
`ack_wait`, so a slow batch (a rate-limited API) is not redelivered under its feet. With
`pipeline` > 1 the loop keeps fetching while up to that many batches are in hand, so a handler
that waits (for a write slot of a fence, say) can merge what later batches bring.

A message delivered `max_deliver` times that would be retried once more is dead-lettered with its
last reason instead (JetStream stops delivering it there). A consumer or stream that disappears
under the loop (deleted by an operator, lost with a server's store) makes `fetch` fail with a
JetStream API error (503 no responders, 404, 409 consumer deleted): the loop re-creates the stream
when it is missing and the consumer, and goes on (counted in `lazyload_consumer_recoveries_total`);
it never ends because of it. The consumer is created again from just past its last ack floor
(JetStream's, shared by every replica of the durable, read every `floor_interval`): everything
after it is delivered again, and the stream's older messages are not (`make faults` found that a
consumer re-created to deliver all replayed the whole LAZYLOAD_DEPS - 20 s of blocked learning
for 8,000 edges, hours for a day of a large mesh's). A consumer lost before any floor was read,
or whose stream was created again (its sequence restarted), starts from the stream's beginning.
A service (re)starting against an existing consumer keeps that consumer's start (deliver policy
and start sequence, which JetStream refuses to change: a restart after a recovery asked for
deliver-all and crashed on the refusal) and updates its other settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import random
import ssl
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from nats.js.errors import (
    APIError,
    BadRequestError,
    NoStreamResponseError,
    NotFoundError,
    ServiceUnavailableError,
)
from prometheus_client import Counter, Gauge
from pydantic import BaseModel

from lazyload_common import codec, errors, events, natsauth, subjects
from lazyload_common.settings import NatsSettings

log = logging.getLogger(__name__)

DEAD_LETTERS = Counter(
    "lazyload_dead_letters_total",
    "Messages dead-lettered, by service and reason class",
    ["service", "reason"],
)
CONSUMED = Counter(
    "lazyload_consumed_total",
    "JetStream messages settled, by consumer and outcome",
    ["consumer", "outcome"],
)
RECOVERIES = Counter(
    "lazyload_consumer_recoveries_total",
    "Times a consumer (or its stream) was found gone and set up again, by consumer",
    ["consumer"],
)
PENDING = Gauge(
    "lazyload_consumer_pending",
    "Consumer lag: messages of the stream not yet delivered to this durable consumer "
    "(JetStream's num_pending as of the last fetch; 0 after a fetch that found nothing)",
    ["stream", "consumer"],
)
NATS_ERRORS = Counter(
    "lazyload_nats_errors_total",
    "Errors the NATS server reported on this service's connection, by kind (permission = "
    "a publish or subscription its identity may not make: a misconfiguration, or an attempt)",
    ["service", "kind"],
)
_UNAVAILABLE = (
    TimeoutError,
    NatsTimeoutError,
    NoRespondersError,
    ConnectionClosedError,
    ServiceUnavailableError,
)
"""A busy, restarting or electing JetStream: waited for, never a reason to fail."""

GIB = 1024**3
STREAM_DEFAULTS: dict[str, dict[str, Any]] = {
    # Every live edge is re-published each refresh interval (300 s): a day of them is plenty for
    # a reconciler to catch up, and the size cap (oldest dropped first) keeps a full disk from
    # stopping the publishers.
    subjects.DEPS_STREAM: {"max_age": 24 * 3600.0, "max_bytes": GIB, "duplicate_window": 120.0},
    subjects.FENCES_STREAM: {
        "max_age": 30 * 24 * 3600.0,
        "max_msgs_per_subject": 100,
        "max_bytes": GIB,
    },
    subjects.SIDECARS_STREAM: {
        "max_age": 7 * 24 * 3600.0,
        "max_msgs_per_subject": 100,
        "max_bytes": GIB,
    },
    subjects.DLQ_STREAM: {"max_age": 14 * 24 * 3600.0, "max_bytes": GIB // 4},
}
"""The limits a stream is created with; an existing stream keeps the limits it has (an
operator may have tuned them): `ensure_streams` only puts its subjects and replicas right."""


async def connect(settings: NatsSettings, *, name: str, wait: float = 60.0) -> NATS:
    """Connect to NATS (retrying up to `wait` seconds), reconnecting forever afterwards."""
    options: dict[str, Any] = {
        "servers": [u.strip() for u in settings.url.split(",") if u.strip()],
        "name": settings.name or name,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "connect_timeout": settings.connect_timeout,
        "allow_reconnect": True,
    }
    options.update(_auth_options(settings, name))

    refused = asyncio.Event()
    last_error: list[str] = []

    async def on_error(e: Exception) -> None:
        last_error[:] = [str(e) or type(e).__name__]
        text = str(e).lower()
        kind = "permission" if "permissions violation" in text else "other"
        if "authorization violation" in text or "authentication" in text:
            kind = "authorization"
            refused.set()
        NATS_ERRORS.labels(name, kind).inc()
        log.error("NATS: %s", e)

    options["error_cb"] = on_error
    # nats-py retries the first connect forever when max_reconnect_attempts is -1: bound it here,
    # and give up at once when the server refuses the credential (it will not change its mind).
    nc = NATS()
    connecting = asyncio.ensure_future(nc.connect(**options))
    refusal = asyncio.ensure_future(refused.wait())
    try:
        done, _ = await asyncio.wait(
            {connecting, refusal}, timeout=wait, return_when="FIRST_COMPLETED"
        )
    finally:
        refusal.cancel()
    failed = connecting.exception() if connecting in done else None
    if connecting in done and failed is None:
        return nc
    connecting.cancel()
    with contextlib.suppress(BaseException):
        await connecting
    with contextlib.suppress(Exception):
        await nc.close()  # a connect given up on keeps its socket open otherwise
    if failed is not None:
        raise failed
    if refusal in done:
        raise errors.ConfigError(
            f"NATS at {settings.url} refused {name}'s credential (Authorization Violation): "
            "check LAZYLOAD_NATS__NKEY_SEED_FILE / CREDS_FILE / USER against the server's users"
        )
    why = f" (last error: {last_error[0]})" if last_error else ""
    raise TimeoutError(f"could not connect to NATS at {settings.url} within {wait}s{why}")


def _auth_options(settings: NatsSettings, name: str) -> dict[str, Any]:
    """Credentials, TLS and the inbox prefix `name`'s NATS identity is allowed replies under."""
    options: dict[str, Any] = {"inbox_prefix": natsauth.inbox_prefix(name)}
    if settings.user:
        options.update(user=settings.user, password=settings.password)
    if settings.token:
        options["token"] = settings.token
    if settings.nkey_seed_file is not None:
        options["nkeys_seed"] = str(settings.nkey_seed_file)
    if settings.creds_file is not None:
        options["user_credentials"] = str(settings.creds_file)
    if settings.tls_ca_file is not None or settings.tls_cert_file is not None:
        context = ssl.create_default_context(
            cafile=str(settings.tls_ca_file) if settings.tls_ca_file else None
        )
        if settings.tls_cert_file is not None and settings.tls_key_file is not None:
            context.load_cert_chain(str(settings.tls_cert_file), str(settings.tls_key_file))
        options["tls"] = context
    return options


async def ensure_streams(
    js: JetStreamContext,
    *,
    replicas: int = 1,
    names: Sequence[str] = tuple(subjects.STREAM_SUBJECTS),
) -> None:
    """Create the lazyload streams that are missing; of an existing one, put only its subjects
    and replica count right, never its limits (idempotent)."""
    for name in names:
        config = stream_config(name, replicas)
        try:
            await js.add_stream(config)
            continue
        except BadRequestError:
            pass
        current = (await js.stream_info(name)).config
        if (
            list(current.subjects or []) == list(config.subjects or [])
            and (current.num_replicas or 1) == replicas
        ):
            continue
        current.subjects, current.num_replicas = config.subjects, replicas
        await js.update_stream(current)


def stream_config(name: str, replicas: int = 1) -> StreamConfig:
    """The configuration lazyload creates stream `name` with."""
    return StreamConfig(
        name=name,
        subjects=subjects.STREAM_SUBJECTS[name],
        storage=StorageType.FILE,
        num_replicas=replicas,
        **STREAM_DEFAULTS.get(name, {}),
    )


async def ensure_stream_exists(js: JetStreamContext, name: str, *, replicas: int = 1) -> bool:
    """Create stream `name` when it does not exist (an existing one is left as it is, limits an
    operator tuned included); True when it had to be created."""
    try:
        await js.stream_info(name)
        return False
    except NotFoundError:
        pass
    try:
        await js.add_stream(stream_config(name, replicas))
    except BadRequestError:  # created meanwhile (another replica), with another config
        return False
    log.warning("stream %s was missing: created it again", name)
    return True


async def publish(
    js: JetStreamContext,
    subject: str,
    event: BaseModel,
    *,
    msg_id: str | None = None,
    timeout: float = 5.0,
    replicas: int | None = None,
) -> None:
    """Publish one event and wait for JetStream's ack (it is then durable). With `replicas`, a
    publish that finds no stream (it was deleted: 503 no responders) creates the lazyload stream
    of the subject again, with that many replicas, and is sent once more."""
    headers = {"Nats-Msg-Id": msg_id} if msg_id else None
    payload = codec.encode(event)
    try:
        await js.publish(subject, payload, headers=headers, timeout=timeout)
    except (NoRespondersError, NoStreamResponseError):  # 503: no stream holds the subject
        stream = subjects.stream_of(subject)
        if replicas is None or stream is None:
            raise
        await ensure_stream_exists(js, stream, replicas=replicas)
        await js.publish(subject, payload, headers=headers, timeout=timeout)


async def dead_letter(
    js: JetStreamContext,
    *,
    service: str,
    reason: str,
    subject: str,
    payload: bytes,
    replicas: int | None = None,
) -> None:
    """Put what `service` could not process on `lazyload.dlq.<service>`, with the reason (the
    DLQ stream created again with `replicas` when it was deleted)."""
    DEAD_LETTERS.labels(service, reason.split(":", 1)[0][:40]).inc()
    event = events.DeadLetter(service=service, reason=reason, subject=subject, payload=payload)
    try:
        await publish(js, subjects.dead_letter(service), event, replicas=replicas)
    except Exception:
        log.exception("could not dead-letter a message of %s (%s)", subject, reason)
        raise


async def last_per_subject(
    js: JetStreamContext, stream: str, subject: str, *, batch: int = 1000, timeout: float = 5.0
) -> list[Msg]:
    """The newest message of every subject of `stream` that matches `subject`, in stream order.

    One pass of a consumer made for it (`DeliverPolicy.LAST_PER_SUBJECT`: the server sends only
    the newest message of each subject; no acks; in memory), fetched `batch` at a time - a few
    round trips for 10,000 subjects, where a `get_last_msg` per subject costs one each - and
    deleted afterwards (else it goes after a minute idle). It stops early when a fetch times out
    (the stream was purged meanwhile)."""
    name = f"last-per-subject-{uuid.uuid4().hex}"
    config = ConsumerConfig(
        name=name,
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
        ack_policy=AckPolicy.NONE,
        filter_subject=subject,
        inactive_threshold=60.0,
        mem_storage=True,
        max_ack_pending=-1,
    )
    info = await js.add_consumer(stream, config=config)
    found: list[Msg] = []
    try:
        remaining = info.num_pending or 0
        sub = await js.pull_subscribe_bind(consumer=name, stream=stream)
        try:
            while remaining > 0:
                try:
                    msgs = await sub.fetch(min(remaining, batch), timeout=timeout)
                except (TimeoutError, NatsTimeoutError):
                    break
                found += msgs
                remaining = msgs[-1].metadata.num_pending if msgs else 0
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
    finally:
        with contextlib.suppress(Exception):
            await js.delete_consumer(stream, name)
    return found


@dataclass(eq=False)
class Delivery:
    """One decoded message of a batch; the handler may mark it rejected or to be retried."""

    msg: Msg
    event: Any
    error: errors.LazyloadError | None = field(default=None)

    def slim(self) -> None:
        """Drop the decoded event and the message headers once the handler has taken what it
        needs: a delivery held across batches then costs its ack subject and payload only (the
        payload is kept for dead-lettering)."""
        self.event = None
        self.msg.headers = None

    def reject(self, reason: str) -> None:
        self.error = errors.PermanentError(reason)

    def retry(self, reason: str, *, delay: float = 1.0) -> None:
        self.error = errors.TemporaryError(reason, delay=delay)


BatchHandler = Callable[[list[Delivery]], Awaitable[None]]


@dataclass
class ConsumerSpec:
    """A durable pull consumer: several replicas with the same `durable` share the work."""

    stream: str
    durable: str
    filter_subject: str
    service: str
    model: type[BaseModel]
    batch: int = 256
    fetch_timeout: float = 0.1
    linger: float = 0.0
    """Seconds to keep collecting after the first message of a batch (the coalescing window):
    everything that arrives for the same key within it is handled as one batch."""
    max_batch: int = 4096
    """The most messages handed to the handler at once when lingering."""
    ack_wait: float = 15.0
    """Seconds JetStream waits for a delivered message's ack before it delivers it again: what a
    replica that died mid-batch (SIGKILL, OOM) costs its messages, as batches still being
    handled are kept alive (`in_progress`) every half of it. `make faults` found 60 s: three
    SIGKILLs of fence-reconciler left 285 edges unlearned for more than 45 s."""
    max_ack_pending: int = 10_000
    pipeline: int = 1
    """Batches in hand at once (1 = fetch the next batch only after settling this one)."""
    max_deliver: int = -1
    """Deliveries of one message at most (-1 = no limit): a message that would be retried after
    its last one is dead-lettered with its reason instead."""
    stream_replicas: int = 1
    """Replicas of `stream` when the loop has to create it again (it was deleted)."""
    floor_interval: float = 5.0
    """Seconds between reads of the consumer's ack floor (where a lost consumer restarts)."""


@dataclass
class _AckFloor:
    """The last ack floor JetStream reported for a consumer (stream sequence; None = unknown)."""

    stream_seq: int | None = None


async def consume(
    js: JetStreamContext, spec: ConsumerSpec, handler: BatchHandler, stop: asyncio.Event
) -> None:
    """Fetch batches until `stop` is set, hand them to `handler`, then settle every message."""
    config = ConsumerConfig(
        durable_name=spec.durable,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=spec.ack_wait,
        max_ack_pending=spec.max_ack_pending,
        max_deliver=spec.max_deliver,
        filter_subject=spec.filter_subject,
    )
    sub = await _subscribe(js, spec, config, stop)
    if sub is None:
        return
    floor = _AckFloor()
    tracker = asyncio.create_task(_track_ack_floor(js, spec, floor, stop))
    exhausted = await _watch_exhausted(js, spec)
    slots = asyncio.Semaphore(max(1, spec.pipeline))
    in_hand: set[asyncio.Task[None]] = set()
    failures: list[BaseException] = []

    def done(task: asyncio.Task[None]) -> None:
        in_hand.discard(task)
        slots.release()
        error = None if task.cancelled() else task.exception()
        if error is not None:
            failures.append(error)

    try:
        while not stop.is_set():
            await slots.acquire()  # with pipeline 1: only once the previous batch is settled
            if failures:
                raise failures[0]
            if stop.is_set():  # set while waiting for the slot: fetch nothing more
                break
            try:
                msgs = await _fetch(sub, spec)
            except APIError as e:  # the consumer or its stream is gone (or JetStream is away)
                slots.release()
                sub = await _recover(js, spec, config, sub, e, stop, floor)
                if sub is None:
                    break
                continue
            if not msgs:
                slots.release()
                continue
            task = asyncio.create_task(_process(js, spec, handler, msgs))
            in_hand.add(task)
            task.add_done_callback(done)
        # finish what is in hand: nothing is left half-done (unsettled messages are redelivered)
        if in_hand:
            await asyncio.gather(*in_hand, return_exceptions=True)
    finally:
        tracker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tracker  # done at once: nothing is left running after the loop
        for task in in_hand:
            task.cancel()
        try:
            if sub is not None:  # None: lost and not recovered
                await sub.unsubscribe()
        except Exception as e:  # the connection may already be closed
            log.debug("unsubscribe of %s failed: %s", spec.durable, e)
        if exhausted is not None:
            with contextlib.suppress(Exception):
                await exhausted.unsubscribe()


MAX_DELIVERIES_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"


async def _watch_exhausted(js: JetStreamContext, spec: ConsumerSpec) -> Any:
    """Dead-letter the messages JetStream gives up on without the loop having seen their last
    delivery fail (the replica that had it stopped, or its ack deadline passed): the server's
    max-deliveries advisory names them. One replica of the durable takes each advisory (a queue
    group); a message whose last delivery failed in the loop was dead-lettered there and has no
    advisory. None when `max_deliver` is unlimited."""
    nc = getattr(js, "_nc", None)
    if spec.max_deliver <= 0 or nc is None:
        return None

    async def on_advisory(msg: Msg) -> None:
        try:
            advisory = json.loads(msg.data)
            seq, deliveries = int(advisory["stream_seq"]), int(advisory.get("deliveries", 0))
            raw = await js.get_msg(spec.stream, seq)
        except Exception as e:  # gone meanwhile (limits, purge), or not an advisory
            log.warning("%s: a message given up on could not be read: %r", spec.durable, e)
            return
        reason = f"max deliveries ({deliveries}) reached without being settled"
        log.warning("%s: dead-lettering a message of %s: %s", spec.service, raw.subject, reason)
        with contextlib.suppress(Exception):  # logged by dead_letter
            await dead_letter(
                js,
                service=spec.service,
                reason=reason,
                subject=raw.subject or "",
                payload=raw.data or b"",
                replicas=spec.stream_replicas,
            )
            CONSUMED.labels(spec.durable, "exhausted").inc()

    subject = f"{MAX_DELIVERIES_ADVISORY}.{spec.stream}.{spec.durable}"
    return await nc.subscribe(subject, queue=f"{spec.durable}-exhausted", cb=on_advisory)


async def _subscribe(
    js: JetStreamContext, spec: ConsumerSpec, config: ConsumerConfig, stop: asyncio.Event
) -> Any:
    """Create the durable consumer, or bring an existing one to `config` (pull_subscribe alone
    keeps it as it is), and subscribe; a missing stream is created first. A busy or unreachable
    server (request timeouts, e.g. at a cold start next to other replicas) is waited for, not a
    reason to fail; None when stopped."""
    delay = 0.5
    while True:
        try:
            try:
                wanted = await _with_existing_start(js, spec, config)
                await js.add_consumer(spec.stream, config=wanted)
            except NotFoundError:  # no stream (deleted): make it, then the consumer
                await ensure_stream_exists(js, spec.stream, replicas=spec.stream_replicas)
                await js.add_consumer(spec.stream, config=config)
            except ServiceUnavailableError:
                raise
            except APIError as e:  # an update JetStream refuses: never a reason to stop
                log.warning("consumer %s keeps its old config: %s", spec.durable, e)
            return await js.pull_subscribe(
                spec.filter_subject, durable=spec.durable, stream=spec.stream, config=config
            )
        except (*_UNAVAILABLE, NotFoundError) as e:
            if stop.is_set():
                return None
            log.warning(
                "consumer %s not set up yet (%r); retrying in %.1f s", spec.durable, e, delay
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 10.0)


IMMUTABLE_START = ("deliver_policy", "opt_start_seq", "opt_start_time")
"""Where a consumer starts: JetStream refuses to change it on an existing consumer ("deliver
policy can not be updated"), and refused the rest of the update with it."""


async def _with_existing_start(
    js: JetStreamContext, spec: ConsumerSpec, config: ConsumerConfig
) -> ConsumerConfig:
    """`config` with the start of the existing consumer, if there is one: a service restarting
    after its consumer was re-created past its ack floor (`_recover`) asks for deliver-all, and
    one whose replica re-created it asks for another start sequence; the consumer keeps where it
    started (a new start would replay or skip) and takes every other setting of `config`."""
    try:
        existing = (await js.consumer_info(spec.stream, spec.durable)).config
    except NotFoundError:
        return config
    keep = {name: getattr(existing, name) for name in IMMUTABLE_START}
    if all(getattr(config, name) == value for name, value in keep.items()):
        return config
    log.info(
        "consumer %s keeps its start (%s, sequence %s)",
        spec.durable,
        existing.deliver_policy,
        existing.opt_start_seq,
    )
    return dataclasses.replace(config, **keep)


async def _track_ack_floor(
    js: JetStreamContext, spec: ConsumerSpec, floor: _AckFloor, stop: asyncio.Event
) -> None:
    """Keep `floor` at the consumer's ack floor, read every `spec.floor_interval` seconds (a
    consumer that cannot be read keeps the last value: it is what a re-created one starts after)."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), spec.floor_interval)
        try:
            info = await js.consumer_info(spec.stream, spec.durable, timeout=2.0)
        except Exception as e:  # gone, or JetStream away: keep the last floor
            log.debug("ack floor of %s not read: %r", spec.durable, e)
            continue
        seq = int(getattr(info.ack_floor, "stream_seq", 0) or 0)
        if seq > 0:
            floor.stream_seq = seq


async def _restart_config(
    js: JetStreamContext, spec: ConsumerSpec, config: ConsumerConfig, floor: _AckFloor
) -> ConsumerConfig:
    """`config` starting just past the last known ack floor; `config` itself (from the
    beginning) when no floor was read or the stream is not the one the floor was read on."""
    if floor.stream_seq is None:
        return config
    try:
        state = (await js.stream_info(spec.stream)).state
    except Exception:  # missing (it is created again, new) or unreachable: from the beginning
        return config
    if int(state.last_seq or 0) < floor.stream_seq:  # created again: its sequence restarted
        return config
    return dataclasses.replace(
        config,
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=floor.stream_seq + 1,
    )


async def _recover(
    js: JetStreamContext,
    spec: ConsumerSpec,
    config: ConsumerConfig,
    old: Any,
    error: APIError,
    stop: asyncio.Event,
    floor: _AckFloor | None = None,
) -> Any:
    """Set the consumer up again after `fetch` failed with `error` (the consumer or its stream
    deleted, or JetStream unavailable for a moment); the new subscription, None when stopped."""
    log.warning(
        "consumer %s of %s failed to fetch (%r): setting it up again",
        spec.durable,
        spec.stream,
        error,
    )
    RECOVERIES.labels(spec.durable).inc()
    with contextlib.suppress(Exception):
        await old.unsubscribe()
    with contextlib.suppress(TimeoutError):  # a short pause: no busy loop on a failing server
        await asyncio.wait_for(stop.wait(), 0.2)
    if stop.is_set():
        return None
    if floor is not None:
        config = await _restart_config(js, spec, config, floor)
        if config.opt_start_seq:
            log.warning(
                "consumer %s restarts at stream sequence %d", spec.durable, config.opt_start_seq
            )
    return await _subscribe(js, spec, config, stop)


async def _fetch(sub: Any, spec: ConsumerSpec) -> list[Msg]:
    """The next batch (lingering when `spec.linger`), or [] when nothing came. A JetStream API
    error (the consumer or stream gone) is raised for the loop to recover from."""
    lag = PENDING.labels(spec.stream, spec.durable)
    try:
        msgs: list[Msg] = await sub.fetch(spec.batch, timeout=spec.fetch_timeout)
    except (TimeoutError, NatsTimeoutError):
        lag.set(0)
        return []
    if spec.linger > 0:
        msgs += await _linger(sub, spec, len(msgs))
    if msgs:
        try:
            lag.set(msgs[-1].metadata.num_pending)
        except Exception as e:  # not a JetStream reply subject: leave the last value
            log.debug("no num_pending on a message of %s: %s", spec.durable, e)
    return msgs


async def _linger(sub: Any, spec: ConsumerSpec, have: int) -> list[Msg]:
    """Collect more messages for up to `spec.linger` seconds, then keep draining while a backlog
    is waiting (full fetches), up to `spec.max_batch`: under load, batches grow instead of the
    same fence being written once per window."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + spec.linger
    more: list[Msg] = []
    while have + len(more) < spec.max_batch:
        left = deadline - loop.time()
        want = min(spec.batch, spec.max_batch - have - len(more))
        try:
            # past the window, a drain fetch still gets `fetch_timeout`: a shorter one times out
            # on a busy loop before the waiting messages are read, and batches shrink under load
            got = await sub.fetch(want, timeout=max(left, spec.fetch_timeout))
        except (TimeoutError, NatsTimeoutError, APIError):
            break  # an API error shows again at the next fetch, which recovers from it
        more += got
        if left <= 0 and len(got) < want:
            break  # past the window and the backlog is drained
    return more


async def _process(
    js: JetStreamContext, spec: ConsumerSpec, handler: BatchHandler, msgs: list[Msg]
) -> None:
    batch: list[Delivery] = []
    for msg in msgs:
        try:
            batch.append(Delivery(msg, codec.decode_as(msg.data, spec.model)))
        except errors.DecodeError as e:
            await _settle_rejected(js, spec, msg, f"decode: {e}")
    if batch:
        keeper = asyncio.create_task(_keep_alive(spec, batch)) if spec.ack_wait > 0 else None
        try:
            await handler(batch)
        except errors.PermanentError as e:
            for d in batch:
                d.error = d.error or e
        except Exception as e:
            log.warning("handler of %s failed for a batch of %d: %s", spec.durable, len(batch), e)
            delay = e.delay if isinstance(e, errors.TemporaryError) else 1.0
            for d in batch:
                d.error = d.error or errors.TemporaryError(str(e), delay=delay)
        finally:
            if keeper is not None:
                keeper.cancel()
    for d in batch:
        await _settle(js, spec, d)


async def _keep_alive(spec: ConsumerSpec, batch: list[Delivery]) -> None:
    """Every half `ack_wait`, tell JetStream the batch is still being worked on."""
    while True:
        await asyncio.sleep(spec.ack_wait / 2)
        for d in batch:
            try:
                await d.msg.in_progress()
            except Exception as e:  # a lost heartbeat means a redelivery at worst
                log.debug("in_progress for %s failed: %s", d.msg.subject, e)
                return


async def _settle(js: JetStreamContext, spec: ConsumerSpec, d: Delivery) -> None:
    if d.error is None:
        await d.msg.ack()
        CONSUMED.labels(spec.durable, "ack").inc()
    elif isinstance(d.error, errors.PermanentError):
        await _settle_rejected(js, spec, d.msg, f"rejected: {d.error}")
    elif spec.max_deliver > 0 and _deliveries(d.msg) >= spec.max_deliver:
        reason = f"max deliveries ({spec.max_deliver}) reached, last: {d.error}"
        await _settle_rejected(js, spec, d.msg, reason)
    else:
        base = d.error.delay if isinstance(d.error, errors.TemporaryError) else 1.0
        await d.msg.nak(delay=nak_delay(base, _deliveries(d.msg)))
        CONSUMED.labels(spec.durable, "nak").inc()


MAX_NAK_DELAY = 120.0
"""The longest a message waits before its next delivery (a backed-off retry)."""


def nak_delay(base: float, deliveries: int, *, cap: float = MAX_NAK_DELAY) -> float:
    """Seconds until the next delivery of a message that failed for the `deliveries`th time:
    `base` (the error's own delay, e.g. a Retry-After, never shortened) doubled per earlier
    delivery, capped, with +-20% jitter so the replicas' retries of one burst spread out."""
    grown = base * 2.0 ** min(max(deliveries - 1, 0), 30)
    return max(base, min(cap, grown) * random.uniform(0.8, 1.2))


def _deliveries(msg: Msg) -> int:
    """How many times JetStream delivered `msg` (1 when it cannot tell)."""
    try:
        return int(msg.metadata.num_delivered)
    except Exception:  # not a JetStream message
        return 1


async def _settle_rejected(js: JetStreamContext, spec: ConsumerSpec, msg: Msg, reason: str) -> None:
    log.warning("%s: dead-lettering a message of %s: %s", spec.service, msg.subject, reason)
    try:
        await dead_letter(
            js,
            service=spec.service,
            reason=reason,
            subject=msg.subject,
            payload=msg.data,
            replicas=spec.stream_replicas,
        )
    except Exception:
        await msg.nak(delay=5.0)  # keep it: losing it silently is worse than seeing it again
        CONSUMED.labels(spec.durable, "nak").inc()
        return
    await msg.term()
    CONSUMED.labels(spec.durable, "term").inc()
