"""One ALS message (bytes) of a stream -> edges, rejections and entry counts (no I/O).

The receiving adapter calls `Ingestor.ingest` for each message of a stream and acts on the
`Outcome`: it counts it and offers the edges to the publisher. The stream's identity arrives only
in its first message, so it is kept in the caller-owned `StreamState`. A malformed message is
one rejection and the stream goes on; one bad entry never costs its neighbours their edges.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from lazyload_common import events

from lazyload_accesslog_ingest import edges, parsing
from lazyload_accesslog_ingest.records import AccessRecord, Rejection, StreamIdentity

log = logging.getLogger(__name__)


@dataclass(slots=True)
class StreamState:
    """What a stream carries from one message to the next."""

    identity: StreamIdentity | None = None
    messages: int = 0


@dataclass(slots=True)
class Outcome:
    """What one message gave."""

    entries: Counter[str] = field(default_factory=Counter)
    """Entries read, by type (`http`, `tcp`)."""
    edges: list[events.DependencyObserved] = field(default_factory=list)
    rejections: Counter[Rejection] = field(default_factory=Counter)


class Ingestor:
    """Turns ALS messages into edges against a `Directory` of the cluster's Services."""

    def __init__(
        self,
        directory: edges.Directory,
        *,
        cluster_domain: str = "cluster.local",
        global_sidecar_namespace: str = "mesh-operator",
        reporter: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.options = edges.Options(cluster_domain=cluster_domain, reporter=reporter)
        self.global_sidecar_namespace = global_sidecar_namespace
        self.clock = clock

    def ingest(self, raw: bytes, stream: StreamState) -> Outcome:
        """Everything one message of `stream` teaches."""
        outcome = Outcome()
        stream.messages += 1
        try:
            msg = parsing.decode_message(raw)
        except parsing.MalformedMessage as e:
            log.debug("malformed ALS message (%d bytes): %s", len(raw), e)
            outcome.rejections[Rejection.MALFORMED_MESSAGE] += 1
            return outcome
        identity = parsing.identity_of(msg, global_sidecar_namespace=self.global_sidecar_namespace)
        if identity is not None:
            stream.identity = identity
        which = msg.WhichOneof("log_entries")
        if which == "http_logs":
            self._entries(outcome, stream, "http", msg.http_logs.log_entry, parsing.http_record)
        elif which == "tcp_logs":
            self._entries(outcome, stream, "tcp", msg.tcp_logs.log_entry, parsing.tcp_record)
        elif identity is None:
            outcome.rejections[Rejection.EMPTY_MESSAGE] += 1
        return outcome

    def _entries(
        self,
        outcome: Outcome,
        stream: StreamState,
        kind: str,
        entries: Iterable[Any],
        to_record: Callable[[Any], AccessRecord | Rejection],
    ) -> None:
        now = self.clock()
        for entry in entries:
            outcome.entries[kind] += 1
            try:
                record = to_record(entry)
                result = (
                    record
                    if isinstance(record, Rejection)
                    else edges.derive(
                        record, stream.identity, self.directory, self.options, now=now
                    )
                )
            except Exception:
                log.exception("an ALS %s entry could not be processed", kind)
                result = Rejection.INTERNAL
            if isinstance(result, Rejection):
                outcome.rejections[result] += 1
            else:
                outcome.edges.extend(result)
