"""The render loop: every mesh update from the watcher, rendered into the default xDS snapshot.

Each update is rendered with the wormhole ports of that moment (`ports.WormholePorts`), and those
ports (with the steered TCP Services' addresses) are handed on (`on_ports`: the mesh-side apply
loop, `syncing.MeshSide.offer`), which never holds up xDS. An unchanged render pushes nothing; an
inconsistent one is counted and the last snapshot kept.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from lazyload_global_pilot import metrics, rendering, tunnels, watching
from lazyload_global_pilot.cache import SnapshotCache
from lazyload_global_pilot.errors import InconsistentSnapshotError
from lazyload_global_pilot.ports import PortSet, WormholePorts
from lazyload_global_pilot.snapshots import Snapshot
from lazyload_global_pilot.tunnels import TcpTunnels

log = logging.getLogger(__name__)


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
