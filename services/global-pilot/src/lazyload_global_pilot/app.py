"""Wiring of global-pilot: watch the mesh, render it, serve it over ADS, answer the admin probes.

`main()` is the console script (`lazyload-global-pilot uninstall` instead removes every mesh-side
object it applied, for the chart's pre-delete hook: `uninstall`); `run(settings, stop=, ready=,
on_bound=)` is what tests and `lazyload up` embed. `ready` is set once the xDS server listens, the kube kinds are listed and the
first snapshot is in the cache, so an Envoy started after it gets a full config at once.
`on_bound(BoundPorts)` tells the caller the ports actually bound (useful with port 0); the admin
app serves the same at `GET /xds`, with the names of the listeners rendered.

Each mesh update is rendered with the wormhole ports of that moment (`ports.WormholePorts`); when
those change and `global_sidecar.apply` is on, a second task (`MeshSide`) renders and applies the
mesh-side objects, retrying a failed apply after a second, without ever holding up xDS.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sys
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from lazyload_common import admin, errors, kube, tasks
from lazyload_common import settings as common_settings

from lazyload_global_pilot import (
    applying,
    meshside,
    metrics,
    rendering,
    resources,
    server,
    tunnels,
    watching,
)
from lazyload_global_pilot.cache import SnapshotCache
from lazyload_global_pilot.errors import InconsistentSnapshotError, InvalidResourceError
from lazyload_global_pilot.ports import PortSet, WormholePorts
from lazyload_global_pilot.settings import GlobalPilotSettings
from lazyload_global_pilot.snapshots import Snapshot
from lazyload_global_pilot.tunnels import TcpTunnels

log = logging.getLogger(__name__)
SERVICE = "global-pilot"


@dataclasses.dataclass(frozen=True)
class BoundPorts:
    """The ports global-pilot actually listens on."""

    xds: int
    admin: int


def main() -> None:
    if sys.argv[1:] == ["uninstall"]:
        try:
            settings = common_settings.from_environment(GlobalPilotSettings)
        except errors.ConfigError as e:
            raise SystemExit(f"lazyload-global-pilot: {e}") from None
        tasks.configure_logging(settings.log_level, settings.log_format)
        removed = uninstall(settings)
        print(f"removed {len(removed)} mesh-side objects: {', '.join(removed) or 'none'}")
        return
    tasks.run_main(run, GlobalPilotSettings)


def uninstall(settings: GlobalPilotSettings) -> list[str]:
    """Delete every object the mesh-side apply made (the catch-all EnvoyFilters, the Services it
    created; a Service the chart made is never ours to delete), so that the mesh works without
    lazyload: no sidecar keeps routing unknown hosts to a global-sidecar that is gone."""
    api = kube.KubeApi(kube.api_client(settings.kube))
    try:
        return applying.MeshSideApplier(api).apply([]).deleted
    finally:
        api.api.close()


async def run(
    settings: GlobalPilotSettings,
    *,
    stop: asyncio.Event | None = None,
    ready: asyncio.Event | None = None,
    on_bound: Callable[[BoundPorts], None] | None = None,
) -> None:
    """Serve until `stop` is set (or a core task fails)."""
    settings.check()
    stop = stop or asyncio.Event()
    cache = SnapshotCache()
    ads = server.AdsServer(cache, hooks=metrics.hooks())
    api = kube.KubeApi(kube.api_client(settings.kube))
    watcher = watching.MeshWatcher(
        api, kinds=settings.watched_kinds(), debounce=settings.watch.debounce
    )
    mesh_side = (
        MeshSide(applying.MeshSideApplier(api), settings.mesh_side_options())
        if settings.global_sidecar.apply
        else None
    )
    ports = settings.wormhole_ports()
    published = asyncio.Event()
    grpc_server, xds_port = await server.start(ads, settings.xds.host, settings.xds.port)

    def readiness() -> dict[str, bool]:
        return {"xds": True, "kube": watcher.synced, "snapshot": published.is_set()}

    admin_app = admin.create_admin_app(
        SERVICE, readiness=readiness, routers=[_status_router(ads, cache, xds_port)]
    )
    admin_server = admin.AdminServer(admin_app, settings.admin.host, settings.admin.port)
    publisher: asyncio.Task[Any] | None = None
    applier: asyncio.Task[Any] | None = None
    try:
        await admin_server.start()
        log.info(
            "global-pilot: xDS on %s:%d, admin on port %d",
            settings.xds.host,
            xds_port,
            admin_server.port,
        )
        if on_bound is not None:
            on_bound(BoundPorts(xds=xds_port, admin=admin_server.port))
        watcher.start()
        if mesh_side is not None:
            # Start from the ports already applied (by another replica, or before a restart).
            ports.remember(
                await asyncio.to_thread(mesh_side.applier.applied_ports, mesh_side.options)
            )
            applier = tasks.create_guarded_task(
                mesh_side.run(), name="global-pilot:mesh-side", stop=stop
            )
        publisher = tasks.create_guarded_task(
            publish(
                watcher,
                cache,
                settings.render_options(),
                published,
                ports=ports,
                on_ports=mesh_side.offer if mesh_side is not None else None,
            ),
            name="global-pilot:publish",
            stop=stop,
        )
        await _first(published, stop)
        if ready is not None and not stop.is_set():
            ready.set()
        await stop.wait()
    finally:
        watcher.stop()
        for task in (publisher, applier):
            if task is not None:
                await tasks.cancel_and_wait(task)
        await grpc_server.stop(0.2)
        await admin_server.stop()


async def publish(
    watcher: watching.MeshWatcher,
    cache: SnapshotCache,
    options: rendering.RenderOptions,
    published: asyncio.Event | None = None,
    *,
    ports: WormholePorts | None = None,
    on_ports: Callable[[PortSet, TcpTunnels], None] | None = None,
) -> None:
    """Render every mesh update into the default snapshot (an unchanged render pushes nothing),
    on the wormhole ports `ports` gives for it (default: the options' static ports); `on_ports`
    hears the ports and the steered TCP Service addresses of each update."""
    async for mesh in watcher.updates():
        port_set = (
            ports.update(mesh)
            if ports is not None
            else PortSet(http=options.listener_ports, tcp=options.tcp_ports)
        )
        metrics.WORMHOLE_PORTS.labels("http").set(len(port_set.http))
        metrics.WORMHOLE_PORTS.labels("tcp").set(len(port_set.tcp))
        if on_ports is not None:
            steered = (
                tunnels.of(mesh, options.own_services) if options.tcp_steering else TcpTunnels()
            )
            on_ports(port_set, steered)
        current = options.model_copy(
            update={"listener_ports": port_set.http, "tcp_ports": port_set.tcp}
        )
        try:
            snapshot = Snapshot.of(rendering.render(mesh, current))
            changed = cache.set(snapshot)
        except InconsistentSnapshotError:
            metrics.RENDERS.labels("inconsistent").inc()
            log.exception("rendered an inconsistent snapshot; keeping the last one")
            continue
        metrics.RENDERS.labels("changed" if changed else "unchanged").inc()
        metrics.SERVICES.set(len(mesh.services))
        if changed:
            log.info("snapshot %s: %d services", snapshot.version, len(mesh.services))
        if published is not None:
            published.set()


class MeshSide:
    """Applies the mesh-side objects for the latest wormhole ports; `offer` never blocks."""

    retry_delay = 1.0
    max_retry_delay = 30.0

    def __init__(
        self, applier: applying.MeshSideApplier, options: meshside.MeshSideOptions
    ) -> None:
        self.applier, self.options = applier, options
        self.latest: PortSet | None = None
        self.latest_tunnels = TcpTunnels()
        self.applied: PortSet | None = None
        self.last_result: applying.ApplyResult | None = None
        self._changed = asyncio.Event()

    def offer(self, ports: PortSet, steered: TcpTunnels | None = None) -> None:
        steered = steered or TcpTunnels()
        if ports != self.latest or steered != self.latest_tunnels:
            self.latest, self.latest_tunnels = ports, steered
            self._changed.set()

    async def run(self) -> None:
        await asyncio.to_thread(meshside.warm_up)  # the schema import takes seconds: do it now
        delay = self.retry_delay
        while True:
            await self._changed.wait()
            self._changed.clear()
            ports, steered = self.latest, self.latest_tunnels
            assert ports is not None
            try:
                desired = meshside.render(ports, self.options, steered)
                self.last_result = await asyncio.to_thread(self.applier.apply, desired)
            except InvalidResourceError:
                metrics.MESH_SIDE_APPLIES.labels("invalid").inc()
                log.exception("mesh-side: rendered an invalid resource; nothing applied")
                continue
            except kube.KubeError as e:
                metrics.MESH_SIDE_APPLIES.labels("error").inc()
                log.warning("mesh-side: apply failed (%s); retrying in %.1fs", e, delay)
            except Exception:
                metrics.MESH_SIDE_APPLIES.labels("error").inc()
                log.exception("mesh-side: apply failed; retrying in %.1fs", delay)
            else:
                metrics.MESH_SIDE_APPLIES.labels("ok").inc()
                self.applied, delay = ports, self.retry_delay
                continue
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_retry_delay)
            self._changed.set()


def _status_router(ads: server.AdsServer, cache: SnapshotCache, xds_port: int) -> APIRouter:
    router = APIRouter()

    @router.get("/xds")
    def xds_status() -> dict[str, Any]:
        snapshot = cache.default
        listeners = snapshot.get(resources.LISTENER) if snapshot is not None else {}
        return {
            "port": xds_port,
            "listeners": sorted(listeners),
            "version": snapshot.version if snapshot is not None else None,
            "versions": dict(snapshot.versions) if snapshot is not None else {},
            "stats": dataclasses.asdict(ads.stats),
        }

    return router


async def _first(*events: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
