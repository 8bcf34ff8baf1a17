"""Wiring of global-pilot: watch the mesh, render it, serve it over ADS, answer the admin probes.

`main()` is the console script (`lazyload-global-pilot uninstall` instead removes every mesh-side
object it applied, for the chart's pre-delete hook: `uninstall`); `run(settings, stop=, ready=,
on_bound=)` is what tests and `lazyload up` embed. `ready` is set once the xDS server listens, the kube kinds are listed and the
first snapshot is in the cache, so an Envoy started after it gets a full config at once.
`on_bound(BoundPorts)` tells the caller the ports actually bound (useful with port 0); the admin
app serves the same at `GET /xds`, with the names of the listeners rendered.

Start order (`lazyload_common.runtime`): the admin app, the xDS server, the watches, the mesh-side
apply loop (`syncing.MeshSide`, when `global_sidecar.apply` is on: it renders and applies the
mesh-side objects for the wormhole ports of each update, retrying a failed apply, without ever
holding up xDS) and the render loop (`publishing.publish`: each mesh update into the snapshot).
Stop order, the reverse: both loops, the watches, the xDS server, the admin app.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sys
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from lazyload_common import errors, kube, runtime, tasks
from lazyload_common import settings as common_settings

from lazyload_global_pilot import (
    applying,
    metrics,
    publishing,
    resources,
    server,
    syncing,
    watching,
)
from lazyload_global_pilot.cache import SnapshotCache
from lazyload_global_pilot.settings import GlobalPilotSettings

log = logging.getLogger(__name__)
SERVICE = "global-pilot"
CHECKS = ("xds", "kube", "snapshot")


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
        result = uninstall(settings)
        removed, denied = result.deleted, result.denied
        print(f"removed {len(removed)} mesh-side objects: {', '.join(removed) or 'none'}")
        if denied:  # another mode's namespaces: the chart no longer lets us write there
            print(f"not allowed to remove {len(denied)}, delete them by hand: {', '.join(denied)}")
        return
    tasks.run_main(run, GlobalPilotSettings)


def uninstall(settings: GlobalPilotSettings) -> applying.ApplyResult:
    """Delete every object the mesh-side apply made (the catch-all EnvoyFilters, the Services it
    created; a Service the chart made is never ours to delete), so that the mesh works without
    lazyload: no sidecar keeps routing unknown hosts to a global-sidecar that is gone. Objects
    RBAC does not let it delete (a former mode's namespaces) are listed in `denied`."""
    api = kube.KubeApi.from_settings(settings.kube)
    try:
        return applying.MeshSideApplier(api).apply([])
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
    cache = SnapshotCache()
    ads = server.AdsServer(cache, hooks=metrics.hooks())
    # one client: its threads run the mesh-side apply; every request obeys kube.qps/burst
    kube_client = kube.AsyncKube.from_settings(settings.kube, threads=2, name="global-pilot-api")
    api = kube_client.blocking
    watcher = watching.MeshWatcher(
        api, kinds=settings.watched_kinds(), debounce=settings.watch.debounce
    )
    mesh_side = (
        syncing.MeshSide(
            applying.MeshSideApplier(api), settings.mesh_side_options(), client=kube_client
        )
        if settings.global_sidecar.apply
        else None
    )
    ports = settings.wormhole_ports()
    published = asyncio.Event()
    async with runtime.Runtime(
        SERVICE, settings.admin, checks=CHECKS, stop=stop, ready=ready
    ) as rt:
        grpc_server, xds_port = await server.start(ads, settings.xds.host, settings.xds.port)
        rt.on_stop(lambda: grpc_server.stop(0.2), name="xds")
        rt.check("xds", lambda: True)
        rt.app.include_router(_status_router(ads, cache, xds_port))
        log.info(
            "global-pilot: xDS on %s:%d, admin on port %d",
            settings.xds.host,
            xds_port,
            rt.admin_port,
        )
        if on_bound is not None:
            on_bound(BoundPorts(xds=xds_port, admin=rt.admin_port))
        watcher.start()
        rt.on_stop(watcher.stop, name="watches")
        rt.check("kube", lambda: watcher.synced)
        rt.check("snapshot", published.is_set)
        if mesh_side is not None:
            # Start from the ports already applied (by another replica, or before a restart).
            ports.remember(
                await kube_client.run(mesh_side.applier.applied_ports, mesh_side.options)
            )
            rt.task(mesh_side.run(), name="global-pilot:mesh-side")
        rt.task(
            publishing.publish(
                watcher,
                cache,
                settings.render_options(),
                published,
                ports=ports,
                on_ports=mesh_side.offer if mesh_side is not None else None,
            ),
            name="global-pilot:publish",
        )
        if await rt.until(published.wait()):
            rt.ready("snapshot %s", cache.default.version if cache.default else None)
        await rt.stopped()


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
