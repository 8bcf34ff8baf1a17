"""Who called the global-sidecar when an inbound istio-proxy sits in front of it (pure).

A global-sidecar pod with its own istio-proxy (the chart's default) receives every first call
from that proxy, over loopback (`127.0.0.6` in REDIRECT mode): the connection's address names no
caller. Two request headers do instead, and only when the connection came from loopback - the
local proxy - are they believed:

- `lazyload-source-ip`: the calling app's address, set (overwritten) by the caller's own sidecar
  on the `to-global-sidecar` route (`%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%`);
- `x-forwarded-client-cert`: appended by the global-sidecar's inbound proxy from the caller's
  mTLS certificate (Istio's default `APPEND_FORWARD`, with `URI`). Only its *last* element is the
  proxy's own; earlier ones are whatever the client sent. Its SPIFFE URI
  (`spiffe://<trust domain>/ns/<namespace>/sa/<service account>`) proves the namespace.

The caller is then the Service at that address *in the proven namespace*: a workload can claim
only addresses of its own namespace (the chart makes the global-sidecar's port STRICT mTLS, so a
proxy-set certificate is always there). Without both headers a proxied entry proves no caller
and is rejected. A connection from any other address is a direct caller (a global-sidecar
without an istio-proxy): its address is the caller and these headers are ignored.

The same header proves who sends an ALS *stream* on the mesh ALS port (`grpc.mesh_port`, behind
accesslog-ingest's own istio-proxy, STRICT mTLS): the inbound proxy (Istio's sidecar inbound
listener: `forward_client_cert_details: APPEND_FORWARD`, `set_current_client_cert_details` with
Subject, URI, DNS) appends the streaming sidecar's certificate to the gRPC metadata of the stream.
`stream_peer` reads it (from a loopback peer only); `claim_problem` compares it with the node
metadata the first message claims: an ordinary sidecar may speak only for its own namespace, and
only a global-sidecar's service account may claim to be the global-sidecar (whose entries name
their callers by address).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from lazyload_common import hosts

from lazyload_accesslog_ingest.records import Rejection, StreamIdentity

SOURCE_IP_HEADER = "lazyload-source-ip"
CLIENT_CERT_HEADER = "x-forwarded-client-cert"
MAX_CLIENT_CERT = 8192
"""Longest `x-forwarded-client-cert` read (a chain of proxies appends; more is refused)."""


INBOUND_PASSTHROUGH_V6 = ipaddress.ip_address("::6")
"""The address Istio's inbound proxy connects from over IPv6 (127.0.0.6 over IPv4)."""


def is_local(address: str) -> bool:
    """True for a loopback address (or Istio's `::6`): the connection came from this pod's own
    proxy."""
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return False
    return ip.is_loopback or ip == INBOUND_PASSTHROUGH_V6


def proxied_caller(
    direct: str, source_ip: str, client_cert: str
) -> tuple[str, str] | Rejection | None:
    """(caller address, proven namespace) of an entry that came through the local proxy, a
    rejection when it came through it but proves no caller, None for a direct caller."""
    if not (source_ip or client_cert) or not is_local(direct):
        return None
    namespace = certified_namespace(client_cert)
    address = source_ip.strip()
    if namespace is None or not hosts.is_ip_literal(address) or is_local(address):
        return Rejection.UNPROVEN_CALLER
    return address, namespace


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """A workload identity as Istio's certificates carry it:
    `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`."""

    trust_domain: str
    namespace: str
    service_account: str

    def __str__(self) -> str:
        return f"spiffe://{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"


def certified_namespace(client_cert: str) -> str | None:
    """The namespace of the SPIFFE URI in the last element of an `x-forwarded-client-cert`
    header, None when there is none (or it is no Kubernetes namespace)."""
    peer = certified_peer(client_cert)
    return None if peer is None else peer.namespace


def certified_peer(client_cert: str) -> SpiffeId | None:
    """The SPIFFE identity in the last element of an `x-forwarded-client-cert` header (the one
    the nearest proxy appended: earlier ones are whatever the client sent), None when there is
    none, it is no Kubernetes SPIFFE ID or the header is longer than `MAX_CLIENT_CERT`."""
    if not client_cert or len(client_cert) > MAX_CLIENT_CERT:
        return None
    element = _split(client_cert, ",")[-1]
    for pair in _split(element, ";"):
        key, _, value = pair.partition("=")
        if key.strip().lower() != "uri":
            continue
        return _spiffe(value.strip().strip('"'))
    return None


def _spiffe(uri: str) -> SpiffeId | None:
    parts = uri.split("/")
    # spiffe: / "" / <trust domain> / ns / <namespace> / sa / <service account>
    if not (
        len(parts) == 7
        and parts[0] == "spiffe:"
        and parts[1] == ""
        and parts[2]
        and parts[3] == "ns"
        and parts[5] == "sa"
        and parts[6]
        and hosts.is_valid_namespace(parts[4])
    ):
        return None
    return SpiffeId(parts[2], parts[4], parts[6])


def peer_address(peer: str) -> str:
    """The address of a grpc peer string (`ipv4:127.0.0.6:43210`, `ipv6:[::1]:43210`), `` for
    any other kind (`unix:...`)."""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return ""
    address, _, _ = rest.rpartition(":")
    return address.strip("[]")


def stream_peer(metadata: Iterable[tuple[str, str | bytes]], peer: str) -> SpiffeId | str:
    """Who the transport proves sent an ALS stream on the mesh port: the SPIFFE identity of the
    `x-forwarded-client-cert` metadata the pod's inbound istio-proxy set, or why there is none
    (a text for the log). Believed only from a loopback peer (the local proxy; anything else
    reached the port around it) and only when there is exactly one such header."""
    address = peer_address(peer)
    if not is_local(address):
        return f"the stream came from {address or peer!r}, not through the pod's istio-proxy"
    values = [v for k, v in metadata if k.lower() == CLIENT_CERT_HEADER]
    if len(values) != 1 or not isinstance(values[0], str):
        return f"{len(values)} {CLIENT_CERT_HEADER} headers: the stream is not mTLS-proven"
    proven = certified_peer(values[0])
    if proven is None:
        return f"no Kubernetes SPIFFE URI in the last {CLIENT_CERT_HEADER} element"
    return proven


def claim_problem(
    proven: SpiffeId,
    claimed: StreamIdentity | None,
    *,
    global_sidecar_accounts: Collection[str],
) -> str | None:
    """Why the node a stream claims (its first message's identifier) is not the one its
    transport proves, None when it is: the claimed namespace must be the certificate's, and a
    claim to be a global-sidecar (entries that name their callers by address) needs one of
    `global_sidecar_accounts` as the service account."""
    if claimed is None:
        return "the stream names no node"
    if not claimed.namespace:
        return f"node {claimed.node_id!r} names no namespace"
    if claimed.namespace != proven.namespace:
        return (
            f"node {claimed.node_id!r} claims namespace {claimed.namespace!r}, "
            f"its certificate is {proven}"
        )
    if claimed.global_sidecar and proven.service_account not in global_sidecar_accounts:
        return (
            f"node {claimed.node_id!r} claims to be a global-sidecar, its certificate is {proven}"
        )
    return None


def _split(text: str, separator: str) -> list[str]:
    """`text` split at `separator` outside double quotes (XFCC quotes values with , ; =)."""
    parts, current, quoted, escaped = [], [], False, False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts
