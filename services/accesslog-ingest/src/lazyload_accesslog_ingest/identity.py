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
"""

from __future__ import annotations

import ipaddress

from lazyload_common import hosts

from lazyload_accesslog_ingest.records import Rejection

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


def certified_namespace(client_cert: str) -> str | None:
    """The namespace of the SPIFFE URI in the last element of an `x-forwarded-client-cert`
    header, None when there is none (or it is no Kubernetes namespace)."""
    if not client_cert or len(client_cert) > MAX_CLIENT_CERT:
        return None
    element = _split(client_cert, ",")[-1]
    for pair in _split(element, ";"):
        key, _, value = pair.partition("=")
        if key.strip().lower() != "uri":
            continue
        parts = value.strip().strip('"').split("/")
        # spiffe: / "" / <trust domain> / ns / <namespace> / sa / <service account>
        if len(parts) == 7 and parts[0] == "spiffe:" and parts[1] == "" and parts[3] == "ns":
            namespace = parts[4]
            return namespace if hosts.is_valid_namespace(namespace) else None
        return None
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
