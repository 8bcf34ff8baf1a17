"""Cluster IP allocation for Services from a configurable range."""

from __future__ import annotations

import ipaddress


class IpAllocator:
    """Hands out free addresses of a CIDR in order.

    The network address, the first host (the real API server gives it to the `kubernetes`
    Service) and, for IPv4, the broadcast address are never handed out.
    """

    def __init__(self, cidr: str) -> None:
        self.network = ipaddress.ip_network(cidr)
        self._used: set[str] = set()
        self._first = 2
        self._last = self.network.num_addresses - 2
        self._cursor = self._first

    def contains(self, ip: str) -> bool:
        try:
            return ipaddress.ip_address(ip) in self.network
        except ValueError:
            return False

    def is_used(self, ip: str) -> bool:
        return ip in self._used

    def pick(self) -> str:
        """A free address; it stays free until `mark` is called for it."""
        span = self._last - self._first + 1
        for step in range(span):
            offset = self._first + (self._cursor - self._first + step) % span
            ip = str(self.network.network_address + offset)
            if ip not in self._used:
                self._cursor = offset
                return ip
        raise RuntimeError(f"service IP range {self.network} is exhausted")

    def mark(self, ip: str) -> None:
        self._used.add(ip)

    def release(self, ip: str) -> None:
        self._used.discard(ip)

    def reset(self) -> None:
        self._used.clear()
        self._cursor = self._first
