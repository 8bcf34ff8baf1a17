"""ALS protobufs -> plain records: the only module that reads Envoy's access-log messages.

Two decoders give the same keys (`resolve`, `DECODERS`): the compiled one (`_wire`, Cython, built with the
package) reads the keys straight off a message's bytes; the protobuf one decodes the message with
the protobuf runtime (upb) and reads them through its accessors. The compiled one is used when it
was built; `tests/test_wire.py` holds it to the protobuf one.

Every sub-message is read through presence checks (`HasField`), never assumed present: Envoy
leaves out what it does not know, and a hand-made or truncated message may leave out anything.
A field an edge cannot do without gives a `Rejection` for that entry alone. The hot path's keys
(`http_keys`) read absent sub-messages as their empty defaults instead, and `http_record_of`
turns a key into the record (or rejection) `http_record` would give as far as edges go. The bytes of a whole
message are decoded here too, so that the gRPC layer never rejects (and ends) a stream for one
undecodable message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, Literal, NamedTuple, Protocol

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2
from google.protobuf import message, struct_pb2

from lazyload_accesslog_ingest import identity
from lazyload_accesslog_ingest.identity import CLIENT_CERT_HEADER, SOURCE_IP_HEADER
from lazyload_accesslog_ingest.records import AccessRecord, Rejection, StreamIdentity

try:
    from lazyload_accesslog_ingest import _wire
except ImportError:  # built without a C compiler: the protobuf decoder only
    _wire = None

log = logging.getLogger(__name__)
Message = als_pb2.StreamAccessLogsMessage
Identifier = als_pb2.StreamAccessLogsMessage.Identifier
COMPILED = _wire is not None
"""Whether the compiled decoder was built (see setup.py)."""
SOURCE_NAMESPACE_HEADER = "slime-source-ns"
GLOBAL_SIDECAR_MARKER = ("SLIME_APP", "LAZYLOAD_GLOBAL_SIDECAR")
"""Node metadata of Slime's global-sidecar (`ISTIO_META_SLIME_APP`): its node is no caller."""

FLAG_CODES = {
    "failed_local_healthcheck": "LH",
    "no_healthy_upstream": "UH",
    "upstream_request_timeout": "UT",
    "local_reset": "LR",
    "upstream_remote_reset": "UR",
    "upstream_connection_failure": "UF",
    "upstream_connection_termination": "UC",
    "upstream_overflow": "UO",
    "no_route_found": "NR",
    "delay_injected": "DI",
    "fault_injected": "FI",
    "rate_limited": "RL",
    "rate_limit_service_error": "RLSE",
    "downstream_connection_termination": "DC",
    "upstream_retry_limit_exceeded": "URX",
    "stream_idle_timeout": "SI",
    "invalid_envoy_request_headers": "IH",
    "downstream_protocol_error": "DPE",
    "upstream_max_stream_duration_reached": "UMSDR",
    "response_from_cache_filter": "RFCF",
    "no_filter_config_found": "NFCF",
    "duration_timeout": "DT",
    "upstream_protocol_error": "UPE",
    "no_cluster_found": "NC",
    "overload_manager": "OM",
    "dns_resolution_failure": "DF",
    "downstream_remote_reset": "DR",
}


class MalformedMessage(ValueError):
    """The bytes are not a `StreamAccessLogsMessage`."""


def decode_message(raw: bytes) -> Message:
    """Decode one ALS message; raise `MalformedMessage` if the bytes are not one."""
    try:
        return Message.FromString(raw)
    except (message.DecodeError, ValueError, TypeError) as e:
        raise MalformedMessage(str(e) or "undecodable") from e


EntryKey = tuple[object, ...]
Firsts = dict[EntryKey, float | None]
"""Distinct key -> the start time (Unix seconds) of the first entry that has it, None if absent."""


class Keyed(NamedTuple):
    """The entries of one message, grouped by key (see `http_keys`)."""

    count: int
    """Entries in the message."""
    firsts: Firsts
    repeats: dict[EntryKey, int]
    """Key -> how many entries have it, when more than one."""
    failed: int = 0
    """Entries that could not be keyed (a bug: each is an `INTERNAL` rejection)."""


class Decoded(Protocol):
    """One ALS message, decoded as far as the stream identity and which entries it holds."""

    @property
    def identifier(self) -> Identifier | None: ...

    @property
    def kind(self) -> Literal["http", "tcp"] | None:
        """Which entries the message holds (its `log_entries` oneof), None for none."""

    def group(self, direction: bool) -> Keyed:
        """The entries grouped by key (`direction`: see `http_keys`); MalformedMessage when
        the compiled decoder finds them broken."""
        ...


Decoder = Callable[[bytes], Decoded]


class _Protobuf:
    """A message decoded with the protobuf runtime."""

    __slots__ = ("kind", "message")

    def __init__(self, raw: bytes) -> None:
        self.message = decode_message(raw)
        self.kind: Literal["http", "tcp"] | None = _KINDS.get(
            self.message.WhichOneof("log_entries")
        )

    @property
    def identifier(self) -> Identifier | None:
        return self.message.identifier if self.message.HasField("identifier") else None

    def group(self, direction: bool) -> Keyed:
        if self.kind == "http":
            entries: Any = self.message.http_logs.log_entry
            group: Callable[..., Grouped] = http_keys
        else:
            entries, group = self.message.tcp_logs.log_entry, tcp_keys
        failed = 0
        try:
            firsts, repeats = group(entries, direction=direction)
        except Exception:  # one odd entry must not cost its neighbours their edges
            log.exception(
                "ALS %s entries could not be keyed together; keying one by one", self.kind
            )
            firsts, repeats, failed = _group_one_by_one(entries, group, direction)
        starts = {key: start_time(entry) for key, entry in firsts.items()}
        return Keyed(len(entries), starts, repeats, failed)


class _Compiled:
    """A message read by the compiled decoder (only its top level so far)."""

    __slots__ = ("_begin", "_identifier", "kind", "raw")

    def __init__(self, raw: bytes) -> None:
        assert _wire is not None  # made only when COMPILED
        try:
            identifier, kind, self._begin = _wire.outline(raw)
            self._identifier = None if identifier is None else Identifier.FromString(identifier)
        except (message.DecodeError, ValueError) as e:
            raise MalformedMessage(str(e) or "undecodable") from e
        self.raw = raw
        self.kind: Literal["http", "tcp"] | None = (
            "http" if kind == _wire.HTTP else "tcp" if kind == _wire.TCP else None
        )

    @property
    def identifier(self) -> Identifier | None:
        return self._identifier

    def group(self, direction: bool) -> Keyed:
        assert _wire is not None  # made only when COMPILED
        kind = _wire.HTTP if self.kind == "http" else _wire.TCP
        try:
            count, firsts, repeats = _wire.keys(self.raw, kind, self._begin, direction)
        except ValueError as e:  # broken wire format, or a string read that is not UTF-8
            raise MalformedMessage(str(e) or "undecodable") from e
        return Keyed(count, firsts, repeats)


_KINDS: dict[str | None, Literal["http", "tcp"]] = {"http_logs": "http", "tcp_logs": "tcp"}
DECODERS: dict[str, Decoder] = {"protobuf": _Protobuf}
if _wire is not None:
    DECODERS["compiled"] = _Compiled


def resolve(name: str = "auto") -> str:
    """The decoder `name` stands for (`compiled`, `protobuf`; `auto`: compiled if it was built);
    ValueError for one that is not there."""
    if name == "auto":
        name = "compiled" if COMPILED else "protobuf"
    if name not in DECODERS:
        built = "was not built (no C compiler at install time?)" if name == "compiled" else ""
        raise ValueError(f"no ALS decoder {name!r} {built}".strip())
    return name


def _group_one_by_one(
    entries: Iterable[Any], group: Callable[..., Grouped], direction: bool
) -> tuple[dict[EntryKey, Any], dict[EntryKey, int], int]:
    """`group`, entry by entry: (firsts, repeats, entries that could not be keyed)."""
    firsts: dict[EntryKey, Any] = {}
    repeats: dict[EntryKey, int] = {}
    failed = 0
    for entry in entries:
        try:
            (key,) = group((entry,), direction=direction)[0]
        except Exception:
            failed += 1
            continue
        if key in firsts:
            repeats[key] = repeats.get(key, 1) + 1
        else:
            firsts[key] = entry
    return firsts, repeats, failed


def identity_of(
    ident: Identifier | None, *, global_sidecar_namespace: str
) -> StreamIdentity | None:
    """The stream identity of a message's identifier; None when it has none (not the first
    message)."""
    if ident is None:
        return None
    node = ident.node if ident.HasField("node") else base_pb2.Node()
    meta = node.metadata.fields if node.HasField("metadata") else {}
    namespace = _string(meta.get("NAMESPACE"))
    marker_key, marker_value = GLOBAL_SIDECAR_MARKER
    return StreamIdentity(
        log_name=ident.log_name,
        node_id=node.id,
        namespace=namespace,
        workload=_string(meta.get("WORKLOAD_NAME")) or _string(meta.get("NAME")),
        labels=_string_map(meta.get("LABELS")),
        global_sidecar=_string(meta.get(marker_key)) == marker_value
        or (bool(namespace) and namespace == global_sidecar_namespace),
    )


def _caller(
    entry: accesslog_pb2.HTTPAccessLogEntry | accesslog_pb2.TCPAccessLogEntry,
) -> tuple[accesslog_pb2.AccessLogCommon, tuple[str, int | None]] | None:
    """An entry's common properties and its caller's address, None when it names no caller."""
    if not entry.HasField("common_properties"):
        return None
    common = entry.common_properties
    caller = _socket(common, "downstream_direct_remote_address")
    return None if caller is None else (common, caller)


def http_record(entry: accesslog_pb2.HTTPAccessLogEntry) -> AccessRecord | Rejection:
    """The record of one HTTP entry, or why it cannot give an edge."""
    found = _caller(entry)
    if found is None:
        return Rejection.MISSING_CALLER
    common, caller = found
    request = entry.request if entry.HasField("request") else accesslog_pb2.HTTPRequestProperties()
    if not request.authority:
        return Rejection.MISSING_AUTHORITY
    response = (
        entry.response if entry.HasField("response") else accesslog_pb2.HTTPResponseProperties()
    )
    headers = request.request_headers  # names lower-case, as Envoy logs them
    proxied = identity.proxied_caller(
        caller[0], headers.get(SOURCE_IP_HEADER, ""), headers.get(CLIENT_CERT_HEADER, "")
    )
    if isinstance(proxied, Rejection):
        return proxied
    caller_ip, proven = proxied or (caller[0], "")
    original = _socket(common, "downstream_local_address") or ("", None)
    return AccessRecord(
        protocol="grpc"
        if headers.get("content-type", "").startswith("application/grpc")
        else "http",
        caller_ip=caller_ip,
        authority=request.authority,
        original_ip=original[0],
        original_port=original[1],
        upstream_cluster=common.upstream_cluster,
        response_flags=_flags(common),
        response_code=response.response_code.value if response.HasField("response_code") else None,
        source_namespace_header=proven or headers.get(SOURCE_NAMESPACE_HEADER, "").strip().lower(),
        start_time=_start_time(common),
        proven_namespace=proven,
    )


def tcp_record(entry: accesslog_pb2.TCPAccessLogEntry) -> AccessRecord | Rejection:
    """The record of one TCP entry, or why it cannot give an edge."""
    found = _caller(entry)
    if found is None:
        return Rejection.MISSING_CALLER
    common, caller = found
    original = _socket(common, "downstream_local_address")
    if original is None:
        return Rejection.TCP_UNKNOWN_DESTINATION
    return AccessRecord(
        protocol="tcp",
        caller_ip=caller[0],
        original_ip=original[0],
        original_port=original[1],
        upstream_cluster=common.upstream_cluster,
        response_flags=_flags(common),
        start_time=_start_time(common),
    )


Grouped = tuple[dict[EntryKey, Any], dict[EntryKey, int]]
"""(distinct key -> the first entry that has it, key -> how many entries have it when more than
one): what `http_keys`/`tcp_keys` make of a message's entries."""


def http_keys(entries: Iterable[accesslog_pb2.HTTPAccessLogEntry], *, direction: bool) -> Grouped:
    """The entries grouped by everything of an HTTP entry that its edges depend on (all but the
    start time, which only goes into `first_seen`: see `start_time`).

    Entries with equal keys give the same edges (or rejection) against the same directory and
    stream identity, so `ingesting` derives them once per key and once per message: this loop
    reads only these few fields through the C protobuf accessors (absent sub-messages read as
    defaults), never building an `AccessRecord`. The key: caller address, authority, unrouted
    flags, inbound direction (only with `direction`: it matters for a workload's own stream
    alone, so other streams do not read the upstream cluster), gRPC content type,
    `slime-source-ns`, and the two headers that name a caller behind the global-sidecar's own
    proxy (`identity`). This is the hottest loop of the service: it is written out in full.
    """
    firsts: dict[EntryKey, Any] = {}
    repeats: dict[EntryKey, int] = {}
    unrouted = _unrouted
    for entry in entries:
        common = entry.common_properties
        request = entry.request
        headers = request.request_headers
        if headers:  # names lower-case, as Envoy logs them
            get = headers.get
            source_ns = get(SOURCE_NAMESPACE_HEADER, "")
            grpc = get("content-type", "").startswith("application/grpc")
            source_ip = get(SOURCE_IP_HEADER, "")
            client_cert = get(CLIENT_CERT_HEADER, "")
        else:
            source_ns, grpc, source_ip, client_cert = "", False, "", ""
        key = (
            common.downstream_direct_remote_address.socket_address.address,
            request.authority,
            common.HasField("response_flags") and unrouted(common.response_flags),
            direction and common.upstream_cluster.startswith("inbound|"),
            grpc,
            source_ns,
            source_ip,
            client_cert,
        )
        if key in firsts:
            repeats[key] = repeats.get(key, 1) + 1
        else:
            firsts[key] = entry
    return firsts, repeats


def tcp_keys(entries: Iterable[accesslog_pb2.TCPAccessLogEntry], *, direction: bool) -> Grouped:
    """Like `http_keys`, for TCP entries (caller, original destination and port)."""
    firsts: dict[EntryKey, Any] = {}
    repeats: dict[EntryKey, int] = {}
    for entry in entries:
        common = entry.common_properties
        local = common.downstream_local_address.socket_address
        key = (
            "tcp",
            common.downstream_direct_remote_address.socket_address.address,
            local.address,
            local.port_value,
            local.WhichOneof("port_specifier"),
            common.HasField("response_flags") and _unrouted(common.response_flags),
            direction and common.upstream_cluster.startswith("inbound|"),
        )
        if key in firsts:
            repeats[key] = repeats.get(key, 1) + 1
        else:
            firsts[key] = entry
    return firsts, repeats


def http_record_of(key: EntryKey) -> AccessRecord | Rejection:
    """What `http_record` gives for the entries of `key`, as far as edges depend on it (no start
    time, response code or original address; of the flags only an unrouted one): a cache miss
    derives from the key and reads no protobuf."""
    caller_ip, authority, unrouted, inbound, grpc, source_ns, source_ip, client_cert = key
    if not caller_ip:
        return Rejection.MISSING_CALLER
    if not authority:
        return Rejection.MISSING_AUTHORITY
    proxied = identity.proxied_caller(caller_ip, source_ip, client_cert)  # type: ignore[arg-type]  # str in an http key
    if isinstance(proxied, Rejection):
        return proxied
    if proxied is not None:
        caller_ip, proven = proxied
        source_ns = proven
    else:
        proven = ""
    return AccessRecord(  # positional: half the cost of keywords, once per new key
        "grpc" if grpc else "http",  # protocol
        caller_ip,  # type: ignore[arg-type]  # EntryKey is a tuple of objects: str in an http key
        authority,  # type: ignore[arg-type]  # str in an http key
        "",  # original_ip
        None,  # original_port
        _INBOUND if inbound else "",  # upstream_cluster
        _UNROUTED if unrouted else _NO_FLAGS,  # response_flags
        None,  # response_code
        source_ns.strip().lower(),  # type: ignore[attr-defined]  # str in an http key; source_namespace_header
        None,  # start_time
        proven,  # proven_namespace
    )


def tcp_record_of(key: EntryKey) -> AccessRecord | Rejection:
    """Like `http_record_of`, for a `tcp_keys` key."""
    _, caller_ip, original_ip, port, port_kind, unrouted, inbound = key
    if not caller_ip:
        return Rejection.MISSING_CALLER
    if not original_ip:
        return Rejection.TCP_UNKNOWN_DESTINATION
    return AccessRecord(  # positional, as in `http_record_of`
        "tcp",  # protocol
        caller_ip,  # type: ignore[arg-type]  # EntryKey is a tuple of objects: str in a tcp key
        "",  # authority
        original_ip,  # type: ignore[arg-type]  # str in a tcp key
        port if port_kind == "port_value" else None,  # type: ignore[arg-type]  # int; original_port
        _INBOUND if inbound else "",  # upstream_cluster
        _UNROUTED if unrouted else _NO_FLAGS,  # response_flags
    )


_INBOUND = "inbound|"
_UNROUTED = frozenset({"NR"})
"""The flags of a record made from a key that says unrouted (any unrouted flag will do)."""
_NO_FLAGS: frozenset[str] = frozenset()


def http_key(entry: accesslog_pb2.HTTPAccessLogEntry, *, direction: bool = True) -> EntryKey:
    """The key of one HTTP entry (see `http_keys`)."""
    return next(iter(http_keys((entry,), direction=direction)[0]))


def tcp_key(entry: accesslog_pb2.TCPAccessLogEntry, *, direction: bool = True) -> EntryKey:
    """The key of one TCP entry (see `tcp_keys`)."""
    return next(iter(tcp_keys((entry,), direction=direction)[0]))


def start_time(
    entry: accesslog_pb2.HTTPAccessLogEntry | accesslog_pb2.TCPAccessLogEntry,
) -> float | None:
    """Unix seconds of the entry's request start, None when absent."""
    if not entry.HasField("common_properties"):
        return None
    return _start_time(entry.common_properties)


def _unrouted(flags: accesslog_pb2.ResponseFlags) -> bool:
    return (
        flags.no_route_found
        or flags.no_cluster_found
        or flags.dns_resolution_failure
        or flags.invalid_envoy_request_headers
        or flags.downstream_protocol_error
        or flags.no_filter_config_found
    )


def _socket(common: accesslog_pb2.AccessLogCommon, name: str) -> tuple[str, int | None] | None:
    if not common.HasField(name):  # type: ignore[arg-type]  # one of the address fields by name
        return None
    address: address_pb2.Address = getattr(common, name)
    if not address.HasField("socket_address") or not address.socket_address.address:
        return None
    sock = address.socket_address
    port = sock.port_value if sock.WhichOneof("port_specifier") == "port_value" else None
    return sock.address, port


def _flags(common: accesslog_pb2.AccessLogCommon) -> frozenset[str]:
    if not common.HasField("response_flags"):
        return frozenset()
    flags = common.response_flags
    found = {code for name, code in FLAG_CODES.items() if getattr(flags, name)}
    if flags.HasField("unauthorized_details"):
        found.add("UAEX")
    return frozenset(found)


def _start_time(common: accesslog_pb2.AccessLogCommon) -> float | None:
    if not common.HasField("start_time"):
        return None
    stamp = common.start_time
    return stamp.seconds + stamp.nanos / 1e9


def _string(value: struct_pb2.Value | None) -> str:
    if value is None or value.WhichOneof("kind") != "string_value":
        return ""
    return value.string_value


def _string_map(value: struct_pb2.Value | None) -> dict[str, str]:
    if value is None or value.WhichOneof("kind") != "struct_value":
        return {}
    return {
        key: item.string_value
        for key, item in value.struct_value.fields.items()
        if item.WhichOneof("kind") == "string_value"
    }
