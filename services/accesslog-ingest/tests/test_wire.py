"""The compiled decoder (`_wire`, Cython) against the protobuf runtime (upb), which it replaces.

- The package's build compiled it (a CI without it would test the slow decoder only).
- Table: the protobuf rules it keeps (merged sub-messages, last scalar wins, oneof members
  clearing each other, wrong wire types as unknown fields, unknown fields and groups skipped).
- Properties (hypothesis): for random messages built with the protobuf classes, and for
  concatenations of them (protobuf merges concatenated messages), both decoders give the same
  identifier, kind, entry count, keys, first-entry start times and repeats, with and without
  the direction. Random bytes and corrupted messages: whatever the protobuf runtime accepts, the
  compiled decoder accepts and reads the same; what it rejects is a `MalformedMessage`, never
  another exception.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from envoy.config.core.v3 import address_pb2
from envoy.data.accesslog.v3 import accesslog_pb2
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lazyload_accesslog_ingest import parsing
from lazyload_testing import ingest as t

COMPILED = parsing.DECODERS.get("compiled")
PROTOBUF = parsing.DECODERS["protobuf"]
MANY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_the_compiled_decoder_was_built() -> None:
    assert parsing.COMPILED, "the package was installed without its compiled decoder (setup.py)"
    assert parsing.resolve() == "compiled"


Read = tuple[object, str | None, parsing.Keyed | None]
"""What a decoder reads of a message: its identifier, kind and keyed entries (None for none)."""


def _read(decode: parsing.Decoder, raw: bytes, direction: bool) -> Read:
    msg = decode(raw)
    keyed = msg.group(direction) if msg.kind is not None else None
    return msg.identifier, msg.kind, keyed


def _same(raw: bytes) -> tuple[Read, Read]:
    """What both decoders read of `raw` (asserting they agree), without and with the direction."""
    assert COMPILED is not None
    results: list[Read] = []
    for direction in (False, True):
        expected = _read(PROTOBUF, raw, direction)
        assert _read(COMPILED, raw, direction) == expected
        results.append(expected)
    return results[0], results[1]


def _merged(*parts: Message) -> bytes:
    return b"".join(p.SerializeToString() for p in parts)


def _entry_in_two_pieces(first: Any, second: Any) -> Any:
    """One entry written as `first` then `second` (protobuf merges them into one)."""
    return type(first).FromString(first.SerializeToString() + second.SerializeToString())


def _keys(raw: bytes, direction: bool = False) -> list[parsing.EntryKey]:
    assert COMPILED is not None
    msg = COMPILED(raw)
    return list(msg.group(direction).firsts)


# --- table: protobuf's rules ---------------------------------------------------------------------


def test_sub_messages_seen_twice_are_merged() -> None:
    first = t.message(t.http_entry("details:9080", caller="10.1.0.1"))
    entry = accesslog_pb2.HTTPAccessLogEntry()
    entry.request.request_headers["slime-source-ns"] = "shop"
    # one entry written in two pieces: common_properties from the first, headers from the second
    both = _entry_in_two_pieces(first.http_logs.log_entry[0], entry)
    raw = t.message(both).SerializeToString()
    _same(raw)
    assert _keys(raw) == [("10.1.0.1", "details:9080", False, False, False, "shop", "", "")]


def test_the_last_scalar_wins_and_entries_add_up() -> None:
    a = t.message(t.http_entry("details:9080"), t.http_entry("ratings:9080"))
    b = t.message(t.http_entry("reviews:9080"))
    raw = _merged(a, b)
    _same(raw)
    assert [k[1] for k in _keys(raw)] == ["details:9080", "ratings:9080", "reviews:9080"]


def test_a_oneof_member_clears_the_others() -> None:
    http = t.message(t.http_entry("details:9080"))
    tcp = t.message(t.tcp_entry("10.96.0.10", 3306))
    (_, kind, keyed), _ = _same(_merged(http, tcp))
    assert kind == "tcp" and keyed is not None and keyed.count == 1
    (_, kind, keyed), _ = _same(_merged(tcp, http, t.message(t.http_entry("ratings"))))
    assert kind == "http" and keyed is not None and keyed.count == 2
    # an address that turns into a pipe has no socket address any more
    entry = t.http_entry("details:9080")
    piped = accesslog_pb2.HTTPAccessLogEntry()
    piped.common_properties.downstream_direct_remote_address.pipe.path = "/tmp/sock"
    raw = t.message(_entry_in_two_pieces(entry, piped)).SerializeToString()
    _same(raw)
    assert _keys(raw)[0][0] == ""
    # a named port clears the port value
    tcp_entry = t.tcp_entry("10.96.0.10", 3306)
    named = accesslog_pb2.TCPAccessLogEntry()
    named.common_properties.downstream_local_address.socket_address.named_port = "mysql"
    raw = t.message(_entry_in_two_pieces(tcp_entry, named)).SerializeToString()
    _same(raw)
    assert _keys(raw)[0][2:5] == ("10.96.0.10", 0, "named_port")


def _field(number: int, wire: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire) + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _len(number: int, payload: bytes) -> bytes:
    return _field(number, 2, _varint(len(payload)) + payload)


def test_unknown_fields_groups_and_wrong_wire_types_are_skipped() -> None:
    entry = t.http_entry("details:9080").SerializeToString()
    group = _field(99, 3, _field(1, 0, b"\x05") + _field(2, 2, b"\x01x")) + _field(99, 4, b"")
    odd = (
        _field(3, 0, b"\x07")  # `request` as a varint: an unknown field, not the request
        + _field(77, 5, b"\x00\x00\x00\x00")
        + _field(78, 1, b"\x00" * 8)
        + group
    )
    raw = _len(2, _len(1, entry + odd)) + _field(1000, 0, b"\x01")
    _same(raw)
    assert _keys(raw)[0][1] == "details:9080"


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"\x12\x05\x0a\x03", "length past the end"),
        (b"\x12\x02\x0a\xff", "truncated varint"),
        (_field(5, 3, b""), "unterminated group"),
        (_field(5, 4, b""), "invalid wire type"),
        (b"\x0f", "invalid wire type"),
        (b"\x00", "invalid field tag"),
        (b"\x08" + b"\xff" * 10 + b"\x01", "varint longer than 10 bytes"),
        (_len(2, _len(1, _len(3, _len(3, b"\xff\xfe")))), "utf-8"),
    ],
)
def test_broken_bytes_are_a_malformed_message(raw: bytes, why: str) -> None:
    assert COMPILED is not None
    with pytest.raises(parsing.MalformedMessage, match="(?i)" + why.split()[0]):
        msg = COMPILED(raw)
        msg.group(False)
    with pytest.raises(parsing.MalformedMessage):
        _read(PROTOBUF, raw, False)


# --- properties ----------------------------------------------------------------------------------

_TEXT = st.sampled_from(["", "details", "details:9080", "10.96.0.10", "ünï", "a" * 70])
_IPS = st.sampled_from(["10.1.0.1", "10.1.0.2", "", "fe80::1"])
_CLUSTERS = st.sampled_from(["", "inbound|9080||", "outbound|9080||details", "inbound"])
_FLAGS = st.lists(st.sampled_from(list(parsing.FLAG_CODES.values())), max_size=3)
_HEADERS = st.dictionaries(
    st.sampled_from(["content-type", "slime-source-ns", "x-request-id", ""]),
    st.sampled_from(["application/grpc", "application/grpc+proto", "text/html", "shop", " Shop "]),
    max_size=3,
)
_STARTS = st.one_of(st.none(), st.floats(min_value=-1e9, max_value=4e9, allow_nan=False))


@st.composite
def _http_entries(draw: st.DrawFn) -> accesslog_pb2.HTTPAccessLogEntry:
    entry = t.http_entry(
        draw(st.one_of(st.none(), _TEXT)),
        caller=draw(st.one_of(st.none(), _IPS)),
        flags=draw(_FLAGS),
        headers=draw(_HEADERS),
        upstream_cluster=draw(_CLUSTERS),
        start=draw(_STARTS),
        with_common=draw(st.booleans()),
    )
    if draw(st.booleans()) and draw(st.booleans()):
        internal = address_pb2.EnvoyInternalAddress(server_listener_name="l")
        entry.common_properties.downstream_direct_remote_address.envoy_internal_address.CopyFrom(
            internal
        )
    return entry


@st.composite
def _tcp_entries(draw: st.DrawFn) -> accesslog_pb2.TCPAccessLogEntry:
    entry = t.tcp_entry(
        draw(st.one_of(st.none(), _IPS)),
        draw(st.sampled_from([0, 80, 3306, 2**32 - 1])),
        caller=draw(st.one_of(st.none(), _IPS)),
        flags=draw(_FLAGS),
        upstream_cluster=draw(_CLUSTERS),
    )
    if draw(st.booleans()) and draw(st.booleans()):
        entry.common_properties.downstream_local_address.CopyFrom(
            address_pb2.Address(socket_address=address_pb2.SocketAddress(named_port="db"))
        )
    return entry


_MESSAGES = st.one_of(
    st.lists(_http_entries(), max_size=6).map(lambda es: t.message(*es)),
    st.lists(_tcp_entries(), max_size=6).map(lambda es: t.message(*es)),
    st.just(t.message(ident=t.identifier(metadata={"NAMESPACE": "default"}))),
    st.lists(_http_entries(), min_size=1, max_size=2).map(
        lambda es: t.message(*es, ident=t.identifier())
    ),
)


@MANY
@given(st.lists(_MESSAGES, min_size=1, max_size=3))
def test_both_decoders_read_the_same_keys(messages: list[Message]) -> None:
    _same(_merged(*messages))


@MANY
@given(
    st.lists(_MESSAGES, min_size=1, max_size=2),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=3),
    st.integers(0, 10_000),
)
def test_corrupted_messages_are_rejected_or_read_the_same(
    messages: list[Message], flips: list[tuple[int, int]], cut: int
) -> None:
    raw = bytearray(_merged(*messages))
    for at, value in flips:
        if raw:
            raw[at % len(raw)] = value
    _accepted_alike(bytes(raw[: max(0, len(raw) - cut % 8)]))


@MANY
@given(st.binary(max_size=300))
def test_random_bytes_are_rejected_or_read_the_same(raw: bytes) -> None:
    _accepted_alike(raw)


def _accepted_alike(raw: bytes) -> None:
    assert COMPILED is not None
    for direction in (False, True):
        try:
            expected = _read(PROTOBUF, raw, direction)
        except parsing.MalformedMessage:
            # the protobuf runtime checks more (UTF-8 of strings the compiled one skips)
            with contextlib.suppress(parsing.MalformedMessage):
                _read(COMPILED, raw, direction)
            continue
        assert _read(COMPILED, raw, direction) == expected
