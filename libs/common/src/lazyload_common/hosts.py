"""Host rules every stage applies, so that an invalid host can never reach a Sidecar.

A valid host is a lower-case RFC 1123 DNS name: labels of 1-63 characters of [a-z0-9-] that neither
start nor end with '-', 253 characters at most, no wildcard, no port, no trailing dot. A fence
domain is a valid host or a whole namespace written `<namespace>/*`.
"""

from __future__ import annotations

import ipaddress
import re

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_NAMESPACE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
MAX_HOST_LENGTH = 253


def is_valid_host(host: str) -> bool:
    """True when `host` is a lower-case RFC 1123 name (no wildcard, port, or trailing dot)."""
    if not host or len(host) > MAX_HOST_LENGTH or not host.isascii():
        return False
    labels = host.split(".")
    if not all(_LABEL.match(label) for label in labels):
        return False
    # An all-numeric last label would be an IP literal or nonsense, never a DNS name.
    return not labels[-1].isdigit()


def is_valid_namespace(namespace: str) -> bool:
    """True when `namespace` is a Kubernetes namespace name (an RFC 1123 label)."""
    return bool(namespace) and len(namespace) <= 63 and bool(_NAMESPACE.match(namespace))


def is_namespace_domain(domain: str) -> bool:
    """True for a whole-namespace fence domain, `<namespace>/*`."""
    ns, sep, rest = domain.partition("/")
    return sep == "/" and rest == "*" and is_valid_namespace(ns)


def is_valid_domain(domain: str) -> bool:
    """True for what a fence may hold: a valid host or `<namespace>/*`."""
    return is_namespace_domain(domain) or is_valid_host(domain)


def is_ip_literal(value: str) -> bool:
    """True when `value` (without port) is an IPv4 or IPv6 address."""
    try:
        ipaddress.ip_address(value.strip("[]"))
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
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"invalid port: {text!r}")
    return int(text)


def service_fqdn(name: str, namespace: str, cluster_domain: str) -> str:
    """The FQDN of Service `namespace/name`."""
    return f"{name}.{namespace}.svc.{cluster_domain}"
