"""`lazyload demo`: the whole stack, real traffic, and what lazyload learned from it.

Starts the stack, registers the bookinfo-like mesh, sends traffic to productpage until every
expected dependency is in the caller's Sidecar, then prints the ServiceFences and Sidecars and, per
learned dependency, the time from its first call to the Sidecar that holds it being written (from
the writer's `lazyload.sidecar.*` events).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import nats
import yaml
from lazyload_common import codec, events, natsauth
from lazyload_common.kube import KubeApi, api_client
from lazyload_common.settings import KubeSettings
from rich.console import Console
from rich.table import Table

from lazyload_cli import bookinfo


@dataclass
class Learned:
    caller: str
    host: str
    first_call: float
    sidecar_written: float | None = None

    @property
    def latency_ms(self) -> float | None:
        if self.sidecar_written is None:
            return None
        return (self.sidecar_written - self.first_call) * 1000


class SidecarWatch:
    """Collects SidecarApplied events: per Sidecar, the first time each egress host appeared."""

    def __init__(self) -> None:
        self.first_seen: dict[tuple[str, str], float] = {}
        """(Sidecar name, FQDN) -> when an egress host `<namespace or *>/<FQDN>` first appeared."""
        self.current: dict[str, set[str]] = {}

    async def start(self, endpoints: Mapping[str, Any]) -> Any:
        """Subscribe to the sidecar events of the stack of `endpoints` (as its `observer`)."""
        nc = await nats.connect(**natsauth.endpoint_options(endpoints, natsauth.OBSERVER))

        async def on_message(msg: Any) -> None:
            event = codec.decode(msg.data)
            if isinstance(event, events.SidecarApplied) and event.action in (
                "applied",
                "unchanged",
            ):
                self.current[event.name] = set(event.egress_hosts)
                for host in event.egress_hosts:
                    fqdn = host.split("/", 1)[-1]
                    self.first_seen.setdefault((event.name, fqdn), event.applied_at)

        await nc.subscribe("lazyload.sidecar.>", cb=on_message)
        return nc

    def holds(self, caller: str, fqdn: str) -> bool:
        return f"*/{fqdn}" in self.current.get(caller, set()) or any(
            h.endswith(f"/{fqdn}") for h in self.current.get(caller, set())
        )

    def written_at(self, caller: str, fqdn: str) -> float | None:
        return self.first_seen.get((caller, fqdn))


async def run_traffic(
    endpoints: dict[str, Any], console: Console, *, timeout: float = 60.0
) -> tuple[list[Learned], bool]:
    """Drive traffic until every expected dependency is in its caller's Sidecar (or timeout)."""
    watch = SidecarWatch()
    nc = await watch.start(endpoints)
    kube = KubeApi(api_client(KubeSettings(kubeconfig=endpoints["kubeconfig"])))
    expected = bookinfo.expected_dependencies()
    try:
        pod_ips = endpoints.get("pod_ips") or bookinfo.POD_IPS
        with bookinfo.running_mesh(endpoints["global_sidecar_http"], pod_ips) as mesh:
            await asyncio.to_thread(bookinfo.register, kube, mesh)
            await _wait_routable(endpoints, mesh, console)
            entry = mesh["productpage"]
            deadline = time.monotonic() + timeout
            done = False
            with console.status("sending traffic to productpage; waiting for Sidecars") as status:
                async with httpx.AsyncClient(timeout=5.0) as client:
                    while time.monotonic() < deadline:
                        try:
                            await client.get(f"http://{entry.ip}:{entry.port}/")
                        except httpx.HTTPError as e:
                            console.print(f"[yellow]request failed: {e}")
                        pending = [
                            (c, h)
                            for c, hs in expected.items()
                            for h in hs
                            if not watch.holds(c, h)
                        ]
                        status.update(
                            f"waiting for {len(pending)} dependencies: "
                            + ", ".join(f"{c} -> {h.split('.')[0]}" for c, h in pending)
                        )
                        if not pending:
                            done = True
                            break
                        await asyncio.sleep(0.2)
            learned = [
                Learned(
                    caller,
                    host,
                    mesh[caller].first_calls[host.split(".")[0]],
                    watch.written_at(caller, host),
                )
                for caller, hosts in expected.items()
                for host in sorted(hosts)
            ]
        return learned, done
    finally:
        await nc.close()


async def _wait_routable(
    endpoints: dict[str, Any], mesh: dict[str, Any], console: Console, timeout: float = 30.0
) -> None:
    """Wait until the global-sidecar Envoy has every demo Service's cluster with its endpoint
    (global-pilot pushed them), so first calls are real first calls, not 404s."""
    admin = endpoints.get("global_sidecar_admin")
    if not admin:
        return
    wanted = [
        f"outbound|{bookinfo.SERVICE_PORT}||{name}.{bookinfo.NAMESPACE}.svc.cluster.local::"
        f"{svc.ip}:{svc.port}"
        for name, svc in mesh.items()
    ]
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2.0) as client:
        while time.monotonic() < deadline:
            try:
                text = (await client.get(f"{admin}/clusters")).text
            except httpx.HTTPError:
                text = ""
            if all(w in text for w in wanted):
                return
            await asyncio.sleep(0.05)
    console.print("[yellow]the global-sidecar did not get every demo Service in time")


def print_results(endpoints: dict[str, Any], learned: list[Learned], console: Console) -> None:
    kube = KubeApi(api_client(KubeSettings(kubeconfig=endpoints["kubeconfig"])))
    fences = kube.list("/apis/microservice.slime.io/v1alpha1/servicefences")["items"]
    sidecars = kube.list("/apis/networking.istio.io/v1/sidecars")["items"]
    for title, items in (("ServiceFences", fences), ("Sidecars", sidecars)):
        console.rule(title)
        for item in items:
            console.print(yaml.safe_dump(_clean(item), sort_keys=False).rstrip())
            console.print("---")
    table = Table(title="Learned dependencies: first call -> Sidecar written")
    table.add_column("caller")
    table.add_column("destination")
    table.add_column("latency", justify="right")
    for item in learned:
        latency = f"{item.latency_ms:.0f} ms" if item.latency_ms is not None else "not learned"
        table.add_row(item.caller, item.host, latency)
    console.print(table)


def _clean(obj: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in obj.get("metadata", {}).items() if k != "managedFields"}
    return {**obj, "metadata": meta}
