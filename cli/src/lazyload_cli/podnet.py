"""Pod addresses a real API server accepts, that never leave this machine.

A real kube-apiserver refuses loopback addresses in Endpoints and EndpointSlices (as it refuses
link-local ones), so the demo mesh cannot register its servers at `127.0.10.x` there. With
`--kube real` (and in the tests that run against a real server) `PodNetwork` gives each demo pod
an address of the private test range `10.244.0.0/16`, held by `lo` as a /32 (traffic to it is
delivered locally), and a blackhole route covers the rest of the pod range and the Service range
(`10.96.0.0/12`), so a packet to an address nobody holds is dropped, never sent to the uplink.
The addresses go when the network closes. Changing addresses and routes needs root
(CAP_NET_ADMIN).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import subprocess

from lazyload_cli.processes import StackError

POD_RANGE = ipaddress.ip_network("10.244.0.0/16")
SERVICE_RANGE = ipaddress.ip_network("10.96.0.0/12")


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise StackError(f"`ip {' '.join(args)}` failed: {result.stderr.strip()}")


def _routes() -> str:
    return subprocess.run(
        ["ip", "route", "show", "table", "main"], capture_output=True, text=True, check=False
    ).stdout


class PodNetwork:
    """Pod addresses of `POD_RANGE` held by `lo`, and blackhole routes for the rest."""

    def __init__(self, subnet: int | None = None) -> None:
        # One /24 of the pod range per network, so that two stacks on one machine do not collide.
        index = subnet if subnet is not None else secrets.randbelow(250) + 2
        self.subnet = ipaddress.ip_network(f"10.244.{index}.0/24")
        self._hosts = self.subnet.hosts()
        self.addresses: list[str] = []
        self._routes: list[str] = []

    @staticmethod
    def check() -> None:
        """Raise a one-line StackError where pod addresses cannot be set up here."""
        if os.geteuid() != 0:
            raise StackError(
                "pod addresses for a real API server need root (they are added to `lo`, with "
                "blackhole routes); run as root or use the Kubernetes API emulator"
            )
        if shutil.which("ip") is None:
            raise StackError("`ip` (iproute2) not found: install iproute2")

    def __enter__(self) -> PodNetwork:
        self.check()
        try:
            present = _routes()
            for network in (POD_RANGE, SERVICE_RANGE):
                if f"blackhole {network}" not in present:
                    _ip("route", "add", "blackhole", str(network))
                    self._routes.append(str(network))
        except BaseException:
            self.__exit__()
            raise
        return self

    def allocate(self, count: int = 1) -> list[str]:
        """`count` new pod addresses, each held by this machine."""
        new = [str(next(self._hosts)) for _ in range(count)]
        for address in new:
            _ip("addr", "add", f"{address}/32", "dev", "lo")
        self.addresses += new
        return new

    def __exit__(self, *exc: object) -> None:
        for address in self.addresses:
            subprocess.run(
                ["ip", "addr", "del", f"{address}/32", "dev", "lo"],
                capture_output=True,
                check=False,
            )
        self.addresses.clear()
        for network in self._routes:
            subprocess.run(
                ["ip", "route", "del", "blackhole", network], capture_output=True, check=False
            )
        self._routes.clear()
