"""Test kit of accesslog-ingest (tests, e2e, benchmarks): feed it like Envoy and Kubernetes, read back.

Not part of the service's package: it lives here, with the other test helpers, so that nothing of it
(nor its dependencies) ships in the production image.

- `http_entry`/`tcp_entry` build entries with the fields the ingest reads; `message` wraps them
  (with an `identifier` for the first message of a stream); `AlsClient` opens client streams on a
  grpc.aio channel and can send raw bytes too, to exercise malformed messages.
- `endpoints`/`service`/`endpoint_slice` build the Kubernetes objects the index reads;
  `sample_index()` is a small bookinfo-like mesh (`SampleMesh` has its addresses).
- `read_dependency_events` reads back the dependency stream; `events_before_marker` reads what
  earlier messages caused and proves that nothing else came of them; `metric_value`, `eventually`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2
from google.protobuf import struct_pb2, timestamp_pb2, wrappers_pb2
from lazyload_accesslog_ingest import indexing, parsing, receiving
from lazyload_common import codec, events, subjects
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError
from prometheus_client import REGISTRY

from lazyload_testing.waiting import eventually as eventually

_FLAG_FIELDS = {code: name for name, code in parsing.FLAG_CODES.items()}


def address(ip: str, port: int = 0) -> address_pb2.Address:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=ip, port_value=port)
    )


def common(
    *,
    caller: str | None = "10.1.0.1",
    caller_port: int = 40000,
    local: str | None = None,
    local_port: int = 0,
    upstream_cluster: str = "",
    flags: Iterable[str] = (),
    start: float | None = 1_700_000_000.5,
) -> accesslog_pb2.AccessLogCommon:
    """AccessLogCommon; flags are Envoy's short codes (NR, NC, UH...)."""
    props = accesslog_pb2.AccessLogCommon(upstream_cluster=upstream_cluster)
    if caller is not None:
        props.downstream_direct_remote_address.CopyFrom(address(caller, caller_port))
        props.downstream_remote_address.CopyFrom(address(caller, caller_port))
    if local is not None:
        props.downstream_local_address.CopyFrom(address(local, local_port))
    for code in flags:
        setattr(props.response_flags, _FLAG_FIELDS[code], True)
    if start is not None:
        seconds = int(start)
        props.start_time.CopyFrom(
            timestamp_pb2.Timestamp(seconds=seconds, nanos=int((start - seconds) * 1e9))
        )
    return props


def http_entry(
    authority: str | None = "details:9080",
    *,
    caller: str | None = "10.1.0.1",
    code: int | None = 200,
    flags: Iterable[str] = (),
    headers: Mapping[str, str] | None = None,
    upstream_cluster: str = "outbound|9080||details.default.svc.cluster.local",
    start: float | None = 1_700_000_000.5,
    local: str | None = None,
    local_port: int = 0,
    with_common: bool = True,
) -> accesslog_pb2.HTTPAccessLogEntry:
    """One HTTP entry as the global-sidecar logs it (None leaves a field out)."""
    entry = accesslog_pb2.HTTPAccessLogEntry(
        protocol_version=accesslog_pb2.HTTPAccessLogEntry.HTTP11
    )
    if with_common:
        entry.common_properties.CopyFrom(
            common(
                caller=caller,
                local=local,
                local_port=local_port,
                upstream_cluster=upstream_cluster,
                flags=flags,
                start=start,
            )
        )
    if authority is not None:
        entry.request.authority = authority
        entry.request.path = "/"
        entry.request.request_method = base_pb2.GET
    for key, value in (headers or {}).items():
        entry.request.request_headers[key] = value
    if code is not None:
        entry.response.response_code.CopyFrom(wrappers_pb2.UInt32Value(value=code))
    return entry


def tcp_entry(
    original: str | None = "10.96.0.10",
    original_port: int = 3306,
    *,
    caller: str | None = "10.1.0.1",
    flags: Iterable[str] = (),
    upstream_cluster: str = "",
) -> accesslog_pb2.TCPAccessLogEntry:
    """One TCP entry: `original` is the address the app dialled (downstream_local_address)."""
    return accesslog_pb2.TCPAccessLogEntry(
        common_properties=common(
            caller=caller,
            local=original,
            local_port=original_port,
            upstream_cluster=upstream_cluster,
            flags=flags,
        )
    )


def identifier(
    node_id: str = "global-sidecar",
    *,
    log_name: str = "lazyload-global-sidecar",
    metadata: Mapping[str, Any] | None = None,
) -> als_pb2.StreamAccessLogsMessage.Identifier:
    """The identifier of a stream's first message; metadata like Istio's (NAMESPACE, LABELS...)."""
    node = base_pb2.Node(id=node_id, cluster=node_id)
    if metadata:
        node.metadata.CopyFrom(_struct(metadata))
    return als_pb2.StreamAccessLogsMessage.Identifier(node=node, log_name=log_name)


def message(
    *entries: accesslog_pb2.HTTPAccessLogEntry | accesslog_pb2.TCPAccessLogEntry,
    ident: als_pb2.StreamAccessLogsMessage.Identifier | None = None,
) -> als_pb2.StreamAccessLogsMessage:
    """A StreamAccessLogsMessage of HTTP or TCP entries (one kind per message, like Envoy)."""
    msg = als_pb2.StreamAccessLogsMessage()
    if ident is not None:
        msg.identifier.CopyFrom(ident)
    for entry in entries:
        if isinstance(entry, accesslog_pb2.TCPAccessLogEntry):
            msg.tcp_logs.log_entry.append(entry)
        else:
            msg.http_logs.log_entry.append(entry)
    return msg


def _struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(dict(values))
    return struct


class AlsClient:
    """Client streams to an ALS server at `target` (`host:port`); TLS with `credentials`."""

    def __init__(self, target: str, *, credentials: grpc.ChannelCredentials | None = None) -> None:
        self.target = target
        self.credentials = credentials
        self._channel: grpc.aio.Channel | None = None

    async def __aenter__(self) -> AlsClient:
        if self.credentials is not None:
            self._channel = grpc.aio.secure_channel(self.target, self.credentials)
        else:
            self._channel = grpc.aio.insecure_channel(self.target)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    def open(self) -> AlsStream:
        """A new stream (Envoy opens one per log config and worker thread)."""
        assert self._channel is not None, "use `async with AlsClient(...)`"
        method = self._channel.stream_unary(
            receiving.METHOD_PATH,
            request_serializer=None,
            response_deserializer=als_pb2.StreamAccessLogsResponse.FromString,
        )
        return AlsStream(method())

    async def send(self, *messages: als_pb2.StreamAccessLogsMessage | bytes) -> None:
        """Send `messages` on a new stream and close it."""
        stream = self.open()
        for msg in messages:
            await stream.send(msg)
        await stream.close()


class AlsStream:
    """One open client stream: `send` messages (or raw bytes), then `close`."""

    def __init__(self, call: Any) -> None:
        self.call = call

    async def send(self, msg: als_pb2.StreamAccessLogsMessage | bytes) -> None:
        await self.call.write(msg if isinstance(msg, bytes) else msg.SerializeToString())

    async def close(self) -> als_pb2.StreamAccessLogsResponse:
        await self.call.done_writing()
        response: als_pb2.StreamAccessLogsResponse = await self.call
        return response


# --- Kubernetes objects and a sample mesh ---------------------------------------------------------


def endpoints(
    namespace: str, name: str, ips: Sequence[str], not_ready: Sequence[str] = ()
) -> dict[str, Any]:
    """An Endpoints object with one subset."""
    return {
        "metadata": {"namespace": namespace, "name": name},
        "subsets": [
            {
                "addresses": [{"ip": ip} for ip in ips],
                "notReadyAddresses": [{"ip": ip} for ip in not_ready],
            }
        ],
    }


def service(
    namespace: str, name: str, cluster_ip: str = "", selector: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """A Service object (selector `app: <name>` unless given)."""
    spec: dict[str, Any] = {"selector": dict(selector or {"app": name})}
    if cluster_ip:
        spec.update(clusterIP=cluster_ip, clusterIPs=[cluster_ip])
    return {"metadata": {"namespace": namespace, "name": name}, "spec": spec}


def endpoint_slice(namespace: str, name: str, svc: str, ips: Sequence[str]) -> dict[str, Any]:
    """An EndpointSlice of Service `namespace/svc`, one endpoint per IP."""
    return {
        "metadata": {
            "namespace": namespace,
            "name": name,
            "labels": {indexing.SERVICE_NAME_LABEL: svc},
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips],
    }


def service_entry(
    namespace: str,
    name: str,
    hosts: Sequence[str],
    *,
    addresses: Sequence[str] = (),
    export_to: Sequence[str] | None = None,
) -> dict[str, Any]:
    """An Istio ServiceEntry (`networking.istio.io/v1`) declaring `hosts` (and `addresses`,
    `exportTo` when given)."""
    spec: dict[str, Any] = {"hosts": list(hosts), "location": "MESH_EXTERNAL", "resolution": "DNS"}
    if addresses:
        spec["addresses"] = list(addresses)
    if export_to is not None:
        spec["exportTo"] = list(export_to)
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"namespace": namespace, "name": name},
        "spec": spec,
    }


class SampleMesh:
    """Addresses of `sample_index()`: bookinfo-like Services in `default`, one in `shop`, and a
    ServiceEntry `egress/payments` (hosts `api.payments.example`, `*.stripe.example`)."""

    PRODUCTPAGE_IP = "10.1.0.1"
    REVIEWS_IP = "10.1.0.2"
    MULTI_IP = "10.1.0.3"
    """A pod selected by two Services (productpage and frontend)."""
    NOT_READY_IP = "10.1.0.4"
    """A not-ready pod of reviews."""
    SLICE_IP = "10.1.0.5"
    """A pod of shop/ratings known only from an EndpointSlice."""
    DETAILS_CLUSTER_IP = "10.96.0.10"
    RATINGS_CLUSTER_IP = "10.96.0.11"


def sample_index() -> indexing.ServiceIndex:
    """A `ServiceIndex` fed with the objects of `SampleMesh`."""
    m = SampleMesh
    index = indexing.ServiceIndex()
    for svc in (
        service("default", "productpage", "10.96.0.9"),
        service("default", "details", m.DETAILS_CLUSTER_IP),
        service("default", "reviews", "10.96.0.12"),
        service("default", "frontend", "10.96.0.13", selector={"tier": "web"}),
        service("shop", "ratings", m.RATINGS_CLUSTER_IP),
    ):
        index.apply_service("ADDED", svc)
    index.apply_endpoints("ADDED", endpoints("default", "productpage", [m.PRODUCTPAGE_IP]))
    index.apply_endpoints(
        "ADDED", endpoints("default", "reviews", [m.REVIEWS_IP], [m.NOT_READY_IP])
    )
    index.apply_endpoints("ADDED", endpoints("default", "frontend", [m.MULTI_IP]))
    index.apply_endpoints(
        "MODIFIED", endpoints("default", "productpage", [m.PRODUCTPAGE_IP, m.MULTI_IP])
    )
    index.apply_endpoint_slice(
        "ADDED", endpoint_slice("shop", "ratings-x1", "ratings", [m.SLICE_IP])
    )
    index.apply_service_entry(
        "ADDED", service_entry("egress", "payments", ["api.payments.example", "*.stripe.example"])
    )
    return index


# --- reading the results ----------------------------------------------------------------------


def metric_value(name: str, labels: Mapping[str, str] | None = None) -> float:
    """Current value of a Prometheus sample of this process (0 when never set)."""
    return REGISTRY.get_sample_value(name, dict(labels or {})) or 0.0


@dataclass(frozen=True)
class Published:
    """One message of the dependency stream."""

    subject: str
    event: events.DependencyObserved
    msg_id: str


async def read_dependency_events(nc: NATS) -> list[Published]:
    """Everything on the LAZYLOAD_DEPS stream, in order (empty when there is no stream)."""
    js = nc.jetstream()
    try:
        info = await js.stream_info(subjects.DEPS_STREAM)
    except NotFoundError:
        return []
    found: list[Published] = []
    if not info.state.messages:
        return found
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        raw = await js.get_msg(subjects.DEPS_STREAM, seq)
        event = codec.decode_as(raw.data or b"", events.DependencyObserved)
        msg_id = (raw.headers or {}).get("Nats-Msg-Id", "")
        found.append(Published(raw.subject or "", event, msg_id))
    return found


MARKER_DOMAIN = "marker.lazyload-test.example"
_markers = itertools.count(1)


def is_marker(published: Published) -> bool:
    """Whether `published` is the edge of an `events_before_marker` marker."""
    return published.event.destination_host.endswith(MARKER_DOMAIN)


async def events_before_marker(
    client: AlsClient, nc: NATS, *, caller: str = "10.1.0.1", timeout: float = 10.0
) -> list[Published]:
    """All that the messages `client` sent before this call published, and proof that they
    published nothing more, without a fixed sleep.

    Sends one more message on a new stream: an edge from `caller` (productpage of
    `sample_index()`) to a fresh external host, and reads the stream until that marker is stored.
    An earlier `send` returned only once the server had handled its messages (queued their edges),
    and the publisher sends its queue in order on one NATS connection, which JetStream stores in
    that order: whatever the earlier messages caused stands before the marker. Markers
    (`is_marker`) are left out of the result; the stream keeps them.
    """
    host = f"m{next(_markers)}.{MARKER_DOMAIN}"
    await client.send(message(http_entry(host, caller=caller), ident=identifier()))
    found: list[Published] = []

    async def marked() -> bool:
        found[:] = await read_dependency_events(nc)
        return any(p.event.destination_host == host for p in found)

    await eventually(marked, timeout=timeout, what=f"the marker edge to {host}")
    before = found[: next(i for i, p in enumerate(found) if p.event.destination_host == host)]
    return [p for p in before if not is_marker(p)]
