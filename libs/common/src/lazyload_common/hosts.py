"""Host rules every stage applies, so that an invalid host can never reach a Sidecar.

A valid host is a lower-case RFC 1123 DNS name: labels of 1-63 characters of [a-z0-9-] that neither
start nor end with '-', 253 characters at most, no wildcard, no port, no trailing dot. A fence
domain is a valid host or a whole namespace written `<namespace>/*`.
"""

from __future__ import annotations

import ipaddress
import re

_LABEL_TEXT = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"(?:{_LABEL_TEXT}\.)*(?![0-9]+\Z){_LABEL_TEXT}")
"""A whole host: dot-separated labels, the last not all digits (an all-numeric last label would
be an IP literal or nonsense, never a DNS name). ASCII only, as `[a-z]` matches no other letter."""
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}")
"""What `ipaddress.IPv4Address` accepts: four decimal octets 0-255, no leading zero."""
_LABEL = re.compile(_LABEL_TEXT)
_SUBDOMAIN = re.compile(rf"{_LABEL_TEXT}(?:\.{_LABEL_TEXT})*")
MAX_HOST_LENGTH = 253


def is_valid_host(host: str) -> bool:
    """True when `host` is a lower-case RFC 1123 name (no wildcard, port, or trailing dot)."""
    return len(host) <= MAX_HOST_LENGTH and _HOST.fullmatch(host) is not None


def is_valid_namespace(namespace: str) -> bool:
    """True when `namespace` is a Kubernetes namespace name (an RFC 1123 label)."""
    return _LABEL.fullmatch(namespace) is not None


def is_object_name(name: str) -> bool:
    """True when `name` can name a Kubernetes object such as a Service, a ServiceFence or a
    Sidecar (a DNS subdomain: lower-case RFC 1123 labels joined by dots, 253 characters at most;
    unlike a host, its last label may be all digits)."""
    return len(name) <= MAX_HOST_LENGTH and _SUBDOMAIN.fullmatch(name) is not None


def is_namespace_domain(domain: str) -> bool:
    """True for a whole-namespace fence domain, `<namespace>/*`."""
    ns, sep, rest = domain.partition("/")
    return sep == "/" and rest == "*" and is_valid_namespace(ns)


def is_valid_domain(domain: str) -> bool:
    """True for what a fence may hold: a valid host or `<namespace>/*`."""
    return is_namespace_domain(domain) or is_valid_host(domain)


def is_ip_literal(value: str) -> bool:
    """True when `value` (without port) is an IPv4 or IPv6 address."""
    bare = value.strip("[]")
    if _IPV4.fullmatch(bare) is not None:  # the usual case, without `ipaddress`'s parsing
        return True
    try:
        ipaddress.ip_address(bare)
    except ValueError:
        return False
    return True


def split_host_port(authority: str) -> tuple[str, int | None]:
    """Split `host[:port]` (IPv6 in brackets) into host and port; the port is None if absent.

    Raises ValueError for an unparsable port.
    """
    authority = authority.strip()
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise ValueError(f"unterminated IPv6 literal: {authority!r}")
        host, rest = authority[1:end], authority[end + 1 :]
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise ValueError(f"junk after IPv6 literal: {authority!r}")
        return host, _port(rest[1:])
    if authority.count(":") > 1:  # a bare IPv6 address
        return authority, None
    host, sep, port = authority.partition(":")
    return host, (_port(port) if sep else None)


def _port(text: str) -> int:
    if text.isdigit():
        port = int(text)  # raises (ValueError) for the digits it cannot read, e.g. "²"
        if 0 < port < 65536:
            return port
    raise ValueError(f"invalid port: {text!r}")


def service_fqdn(name: str, namespace: str, cluster_domain: str) -> str:
    """The FQDN of Service `namespace/name`."""
    return f"{name}.{namespace}.svc.{cluster_domain}"


def service_of(host: str, cluster_domain: str) -> tuple[str, str] | None:
    """`(namespace, name)` of a Service FQDN `<name>.<namespace>.svc.<cluster_domain>`, else None."""
    suffix = f".svc.{cluster_domain}"
    if not host.endswith(suffix):
        return None
    name, dot, namespace = host[: -len(suffix)].partition(".")
    if not dot or not name or not namespace or "." in namespace:
        return None
    return namespace, name
