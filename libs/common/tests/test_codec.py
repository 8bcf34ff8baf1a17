"""Event codec: round trips of every event kind, tolerant reading, and typed rejection of garbage."""

from __future__ import annotations

import contextlib
from typing import cast

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st
from lazyload_common import codec, errors, events
from pydantic import BaseModel

SAMPLES = [
    events.DependencyObserved(
        source_namespace="default",
        source_name="productpage",
        destination_host="details.default.svc.cluster.local",
        destination_port=9080,
        destination_namespace="default",
        destination_service="details",
        first_seen=1.5,
    ),
    events.FenceChanged(
        namespace="default",
        name="productpage",
        revision=3,
        hosts=["a.default.svc.cluster.local", "ns/*"],
        added=["ns/*"],
        reasons={"ns/*": ["spec"]},
        workload_selector={"app": "productpage"},
    ),
    events.SidecarApplied(
        namespace="default",
        name="productpage",
        revision=3,
        action="applied",
        egress_hosts=["istio-system/*"],
    ),
    events.DeadLetter(service="x", reason="decode: bad", subject="s", payload=b"\x00\xff"),
]


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: e.kind)
def test_round_trip(event: BaseModel) -> None:
    assert codec.decode(codec.encode(event)) == event


def test_unknown_fields_are_ignored() -> None:
    raw = SAMPLES[0].model_dump() | {"added_by_a_newer_writer": 1}
    decoded = codec.decode(cast(bytes, msgpack.packb(raw)))  # packb without a stream: bytes
    assert decoded == SAMPLES[0]


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xc1",
        msgpack.packb([1, 2]),
        msgpack.packb({"kind": "nope"}),
        msgpack.packb(
            {"kind": "fence", "schema_version": 2, "namespace": "a", "name": "b", "revision": 1}
        ),
        msgpack.packb({"kind": "fence", "schema_version": 1, "namespace": "a"}),
    ],
    ids=["empty", "reserved-byte", "list", "unknown-kind", "future-version", "missing-fields"],
)
def test_garbage_is_a_decode_error(payload: bytes) -> None:
    with pytest.raises(errors.DecodeError):
        codec.decode(payload)


def test_decode_as_checks_the_model() -> None:
    with pytest.raises(errors.DecodeError, match="expected FenceChanged"):
        codec.decode_as(codec.encode(SAMPLES[0]), events.FenceChanged)


@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_else(payload: bytes) -> None:
    with contextlib.suppress(errors.DecodeError):
        codec.decode(payload)


TIMES = st.floats(0.0, events.MAX_TIME)


@pytest.mark.parametrize(
    "seconds", [-1.0, -62_167_219_200.0, events.MAX_TIME + 1, float("nan"), float("inf")]
)
@pytest.mark.parametrize(
    ("event", "field"),
    [(SAMPLES[0], "first_seen"), (SAMPLES[0], "observed_at"), (SAMPLES[1], "changed_at")],
    ids=["first_seen", "observed_at", "changed_at"],
)
def test_impossible_times_do_not_decode(
    event: events.FenceChanged, field: str, seconds: float
) -> None:
    """Before 1970 (a negative start time, year 0), after year 9999 or not finite: the payload
    is refused where it is read, so one bad event is dead-lettered alone (#19)."""
    with pytest.raises(errors.DecodeError, match=field):
        codec.decode(codec.encode_with(event, **{field: seconds}))


@given(
    st.builds(
        events.DependencyObserved,
        source_namespace=st.text(max_size=10),
        source_name=st.text(max_size=10),
        source_kind=st.sampled_from(["service", "workload", "unresolved"]),
        destination_host=st.text(max_size=20),
        destination_port=st.one_of(st.none(), st.integers(0, 65535)),
        destination_namespace=st.one_of(st.none(), st.text(max_size=10)),
        destination_service=st.one_of(st.none(), st.text(max_size=10)),
        external=st.booleans(),
        protocol=st.sampled_from(["http", "grpc", "tcp"]),
        first_seen=TIMES,
        reporter=st.text(max_size=5),
    ),
    TIMES,
    TIMES,
)
def test_encode_with_is_encode_of_the_updated_copy(
    event: events.DependencyObserved, first_seen: float, observed_at: float
) -> None:
    times = {"first_seen": first_seen, "observed_at": observed_at}
    assert codec.encode_with(event, **times) == codec.encode(event.model_copy(update=times))
