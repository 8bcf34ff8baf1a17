"""Wiring of global-pilot: watch the mesh, render it, serve it over ADS, answer the admin probes.

`main()` is the console script; `run(settings, stop=, ready=, on_bound=)` is what tests and
`lazyload up` embed. `ready` is set once the xDS server listens, the kube kinds are listed and the
first snapshot is in the cache, so an Envoy started after it gets a full config at once.
`on_bound(BoundPorts)` tells the caller the ports actually bound (useful with port 0); the admin
app serves the same at `GET /xds`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from lazyload_common import admin, kube, tasks

from lazyload_global_pilot import metrics, rendering, server, watching
from lazyload_global_pilot.cache import SnapshotCache
from lazyload_global_pilot.errors import InconsistentSnapshotError
from lazyload_global_pilot.settings import GlobalPilotSettings
from lazyload_global_pilot.snapshots import Snapshot

log = logging.getLogger(__name__)
SERVICE = "global-pilot"


@dataclasses.dataclass(frozen=True)
class BoundPorts:
    """The ports global-pilot actually listens on."""

    xds: int
    admin: int


def main() -> None:
    settings = GlobalPilotSettings()
    tasks.configure_logging(settings.log_level)
    tasks.run_main(run, settings)


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
    watcher = watching.MeshWatcher(
        kube.KubeApi(kube.api_client(settings.kube)),
        kinds=settings.watched_kinds(),
        debounce=settings.watch.debounce,
    )
    published = asyncio.Event()
    grpc_server, xds_port = await server.start(ads, settings.xds.host, settings.xds.port)

    def readiness() -> dict[str, bool]:
        return {"xds": True, "kube": watcher.synced, "snapshot": published.is_set()}

    admin_app = admin.create_admin_app(
        SERVICE, readiness=readiness, routers=[_status_router(ads, cache, xds_port)]
    )
    admin_server = admin.AdminServer(admin_app, settings.admin.host, settings.admin.port)
    publisher: asyncio.Task[Any] | None = None
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
        publisher = tasks.create_guarded_task(
            publish(watcher, cache, settings.render_options(), published),
            name="global-pilot:publish",
            stop=stop,
        )
        await _first(published, stop)
        if ready is not None and not stop.is_set():
            ready.set()
        await stop.wait()
    finally:
        watcher.stop()
        if publisher is not None:
            await tasks.cancel_and_wait(publisher)
        await grpc_server.stop(0.2)
        await admin_server.stop()


async def publish(
    watcher: watching.MeshWatcher,
    cache: SnapshotCache,
    options: rendering.RenderOptions,
    published: asyncio.Event | None = None,
) -> None:
    """Render every mesh update into the default snapshot (an unchanged render pushes nothing)."""
    async for mesh in watcher.updates():
        try:
            snapshot = Snapshot.of(rendering.render(mesh, options))
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


def _status_router(ads: server.AdsServer, cache: SnapshotCache, xds_port: int) -> APIRouter:
    router = APIRouter()

    @router.get("/xds")
    def xds_status() -> dict[str, Any]:
        snapshot = cache.default
        return {
            "port": xds_port,
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
