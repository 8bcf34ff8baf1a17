"""One ALS message (bytes) of a stream -> observed edges, rejections and entry counts (no I/O).

The receiving adapter calls `Ingestor.ingest` for each message of a stream and acts on the
`Outcome`: it counts it and offers the observed edges to the publisher. The stream's identity
arrives only in its first message, so it is kept in the caller-owned `StreamState`. A malformed
message is one rejection and the stream goes on; one bad entry never costs its neighbours their
edges.

Hot path: an entry's edges depend only on a few of its fields, the stream identity and the
directory. The decoder (`parsing.resolve`: compiled, or the protobuf runtime) groups a message's
entries by those fields (the key; the start time of the first entry of each key is kept, repeats
are counted), so the cache is asked once per distinct key of a message. A message is read whole
before the stream's state changes: a malformed one changes nothing. Streams without a workload identity (the global-sidecar's, whose entries name their
callers by address) share one bounded cache from that key to the derived result (edge
prototypes, or a rejection); a workload's stream has its own, as its identity is the caller.
Caches are dropped when the directory (`version`) or the stream identity changes. A miss derives
from the key alone (`parsing.http_record_of`): `edges.derive` + event model run once per distinct
key, and never read protobuf. A sighting is the prototype plus the start time; the publisher
deduplicates on its key and encodes the event (the prototype with `sighting_times`) only for edges
it publishes (`Observed.event` builds the same event as a model, for readers of an `Outcome`).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from lazyload_common import events

from lazyload_accesslog_ingest import edges, parsing
from lazyload_accesslog_ingest.records import AccessRecord, Rejection, StreamIdentity
from lazyload_accesslog_ingest.rejections import RecentRejections

log = logging.getLogger(__name__)
CACHE_SIZE = 65_536
"""Distinct entry keys remembered per cache (a cache is emptied when full)."""

_Prototypes = tuple[tuple[tuple[events.DependencyObserved, str], ...], bool]
"""((event prototype, its edge key) per edge of one entry key, caller unresolved)."""


@dataclass(slots=True)
class Observed:
    """One edge seen in a message (its first entry there): prototype event, key, start time."""

    prototype: events.DependencyObserved
    key: str
    start: float | None
    """Start time of the first entry that showed the edge (its `first_seen`), None if absent."""
    observed_at: float

    @property
    def event(self) -> events.DependencyObserved:
        """The event of this sighting (built on demand: only published edges need it)."""
        return self.prototype.model_copy(update=sighting_times(self.start, self.observed_at))


def sighting_times(start: float | None, observed_at: float) -> dict[str, float]:
    """The times a sighting sets on its prototype event: `first_seen` is the entry's start
    (the time of observation when the entry has none), `observed_at`."""
    return {"first_seen": observed_at if start is None else start, "observed_at": observed_at}


Sighting = tuple[events.DependencyObserved, float | None]
"""(prototype event, start time of the entry that showed it first in a message)."""


@dataclass(slots=True)
class StreamState:
    """What a stream carries from one message to the next."""

    identity: StreamIdentity | None = None
    messages: int = 0
    malformed: int = 0
    cache: dict[parsing.EntryKey, _Prototypes | Rejection] = field(default_factory=dict)
    """Derived results of a workload's stream (other streams share the ingestor's cache)."""
    cache_version: object = None


@dataclass(slots=True)
class Outcome:
    """What one message gave."""

    entries: Counter[str] = field(default_factory=Counter)
    """Entries read, by type (`http`, `tcp`)."""
    sightings: dict[str, Sighting] = field(default_factory=dict)
    """Edge key -> its sighting, each edge once per message (the first entry that showed it)."""
    observed_at: float = 0.0
    derived: int = 0
    """Edges derived from entries, repeats within the message included."""
    rejections: Counter[Rejection] = field(default_factory=Counter)
    unresolved: int = 0
    """Entries whose unknown caller was published as an `unresolved` edge."""
    clamped: int = 0
    """Sightings whose entry's start time was impossible (`edges.plausible_start`): their
    `first_seen` is the time of observation instead."""

    @property
    def observed(self) -> list[Observed]:
        """The sightings as `Observed` edges."""
        at = self.observed_at
        return [Observed(proto, key, start, at) for key, (proto, start) in self.sightings.items()]

    @property
    def edges(self) -> list[events.DependencyObserved]:
        """The events of all observed edges (builds each; the hot path uses `sightings`)."""
        return [o.event for o in self.observed]


MAX_CACHED = 100_000
"""Entry keys one cache of derived results holds before it starts over (as many as the dedup
memory's default edges): the caches were emptied only when the directory changed, so with a stable
mesh every distinct key ever seen stayed."""


class Ingestor:
    """Turns ALS messages into edges against a `Directory` of the cluster's Services."""

    def __init__(
        self,
        directory: edges.Directory,
        *,
        cluster_domain: str = "cluster.local",
        global_sidecar_namespace: str = "mesh-operator",
        reporter: str = "",
        publish_unresolved: bool = False,
        clock: Callable[[], float] = time.time,
        decoder: str = "auto",
        rejections: RecentRejections | None = None,
        max_cached: int = MAX_CACHED,
    ) -> None:
        self.directory = directory
        self.max_cached = max_cached
        """Entry keys a cache of derived results holds at most before it starts over."""
        self.decoder = parsing.resolve(decoder)
        """`compiled` or `protobuf` (see `parsing.resolve`): what reads the messages."""
        self.decode = parsing.DECODERS[self.decoder]
        self.options = edges.Options(
            cluster_domain=cluster_domain,
            reporter=reporter,
            publish_unresolved=publish_unresolved,
        )
        self.global_sidecar_namespace = global_sidecar_namespace
        self.clock = clock
        self.rejections = rejections
        """Where rejections are noted with their callers (once per new entry key), if anywhere."""
        self._shared: dict[parsing.EntryKey, _Prototypes | Rejection] = {}
        """Derived results of the streams without a workload identity (they do not depend on it)."""
        self._version: object = None
        self._memo = edges.Memo()
        """Destinations and events behind all caches (cleared with the shared cache)."""

    def ingest(self, raw: bytes, stream: StreamState) -> Outcome:
        """Everything one message of `stream` teaches."""
        outcome = Outcome()
        stream.messages += 1
        try:
            msg = self.decode(raw)
            identity = parsing.identity_of(
                msg.identifier, global_sidecar_namespace=self.global_sidecar_namespace
            )
            kind = msg.kind
            if identity is None:
                identity = stream.identity
            keyed = None
            if kind is not None:
                keyed = msg.group(identity is not None and identity.is_workload)
        except parsing.MalformedMessage as e:  # the stream's state stays as it was
            log.debug("malformed ALS message (%d bytes): %s", len(raw), e)
            outcome.rejections[Rejection.MALFORMED_MESSAGE] += 1
            stream.malformed += 1
            return outcome
        except Exception:  # a bug in a decoder: this message is lost, not the stream
            log.exception("an ALS message (%d bytes) could not be read", len(raw))
            outcome.rejections[Rejection.INTERNAL] += 1
            return outcome
        if identity is not stream.identity:
            stream.identity = identity
            stream.cache.clear()
        if keyed is not None:
            self._entries(outcome, stream, kind, keyed)  # type: ignore[arg-type]  # kind is set when keyed is
        elif msg.identifier is None:
            outcome.rejections[Rejection.EMPTY_MESSAGE] += 1
        return outcome

    def _entries(
        self, outcome: Outcome, stream: StreamState, kind: str, keyed: parsing.Keyed
    ) -> None:
        now = self.clock()
        cache = self._cache(stream)
        identity = stream.identity
        record_of = parsing.http_record_of if kind == "http" else parsing.tcp_record_of
        outcome.observed_at = now
        outcome.entries[kind] += keyed.count
        firsts, repeats = keyed.firsts, keyed.repeats
        get = cache.get
        rejections = outcome.rejections
        if keyed.failed:
            rejections[Rejection.INTERNAL] += keyed.failed
        first = outcome.sightings
        derived = unresolved = clamped = 0
        latest = now + edges.MAX_CLOCK_SKEW
        for key, start in firsts.items():
            if start is not None and not 0.0 <= start <= latest:  # `edges.plausible_start`
                start = None  # first_seen = the time of observation: never an impossible time
                clamped += 1
            result = get(key)
            if result is None:
                try:
                    result = self._derive(key, record_of, identity, now)
                except Exception:
                    log.exception("an ALS %s entry could not be processed", kind)
                    result = Rejection.INTERNAL
                else:
                    if len(cache) >= CACHE_SIZE:
                        cache.clear()
                    cache[key] = result
                    if result.__class__ is not tuple:  # once per new key: bounded
                        log.debug("ALS %s entry rejected (%s): %r", kind, result, key)
            times = repeats.get(key, 1) if repeats else 1
            if result.__class__ is not tuple:
                rejections[cast(Rejection, result)] += times
                continue
            prototypes, is_unresolved = cast(_Prototypes, result)  # not a Rejection: a tuple
            if is_unresolved:
                unresolved += times
            derived += len(prototypes) * times
            for proto, edge_key in prototypes:
                if edge_key not in first:
                    first[edge_key] = (proto, start)
        outcome.derived += derived
        outcome.unresolved += unresolved
        outcome.clamped += clamped

    def _cache(self, stream: StreamState) -> dict[parsing.EntryKey, _Prototypes | Rejection]:
        version = getattr(self.directory, "version", None)
        full = len(self._shared) >= self.max_cached or len(self._memo) >= 3 * self.max_cached
        if version is None or version != self._version or full:
            self._shared.clear()  # the directory changed (or cannot tell), or full: afresh
            self._memo.clear()
            self._version = version
        identity = stream.identity
        if identity is None or not identity.is_workload:
            return self._shared
        if version is None or version != stream.cache_version:
            stream.cache.clear()
            stream.cache_version = version
        elif len(stream.cache) >= self.max_cached:
            stream.cache.clear()
        return stream.cache

    def _derive(
        self,
        key: parsing.EntryKey,
        record_of: Callable[[parsing.EntryKey], AccessRecord | Rejection],
        identity: StreamIdentity | None,
        now: float,
    ) -> _Prototypes | Rejection:
        record = record_of(key)
        if isinstance(record, Rejection):
            return record
        if len(self._memo) >= CACHE_SIZE:
            self._memo.clear()
        result = edges.prototypes(
            record, identity, self.directory, self.options, now=now, memo=self._memo
        )
        if isinstance(result, Rejection):
            if self.rejections is not None:
                self._note(result, record, identity)
            return result
        unresolved = bool(result) and result[0][0].source_kind == "unresolved"
        return tuple(result), unresolved

    def _note(
        self, reason: Rejection, record: AccessRecord, identity: StreamIdentity | None
    ) -> None:
        """Note a rejection with the callers it concerns (for `lazyload explain`)."""
        assert self.rejections is not None
        callers = edges.resolve_callers(record, identity, self.directory)
        names = () if isinstance(callers, Rejection) else tuple(f"{c[0]}/{c[1]}" for c in callers)
        if record.protocol == "tcp":
            host = f"{record.original_ip}:{record.original_port or ''}"
        else:
            normalised = edges.normalise_authority(record.authority)
            host = record.authority if isinstance(normalised, Rejection) else normalised[0]
        self.rejections.note(reason, names, record.caller_ip, host)
