"""The mesh-side apply loop: the global-sidecar Service(s) and the `to-global-sidecar`
EnvoyFilter(s) kept in step with the latest wormhole ports.

`MeshSide.offer` (called by the render loop for every update) never blocks: it records the latest
ports and steered TCP Services; `run` renders the mesh-side objects for the latest (`meshside`)
and applies them (`applying.MeshSideApplier`), retrying a failed apply after a second, doubling up
to 30 s (or after the API server's Retry-After, when it asks for longer). An invalid render is
counted and nothing is applied until the ports change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from lazyload_common import kube

from lazyload_global_pilot import applying, meshside, metrics
from lazyload_global_pilot.errors import InvalidResourceError
from lazyload_global_pilot.ports import PortSet
from lazyload_global_pilot.tunnels import TcpTunnels

log = logging.getLogger(__name__)
T = TypeVar("T")


class MeshSide:
    """Applies the mesh-side objects for the latest wormhole ports; `offer` never blocks."""

    retry_delay = 1.0
    max_retry_delay = 30.0

    def __init__(
        self,
        applier: applying.MeshSideApplier,
        options: meshside.MeshSideOptions,
        *,
        client: kube.AsyncKube | None = None,
    ) -> None:
        self.applier, self.options = applier, options
        self.client = client
        """Whose threads the blocking apply runs in (the service's client; else asyncio's)."""
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
            wait = delay
            try:
                desired = meshside.render(ports, self.options, steered)
                self.last_result = await self._blocking(self.applier.apply, desired)
            except InvalidResourceError:
                metrics.MESH_SIDE_APPLIES.labels("invalid").inc()
                log.exception("mesh-side: rendered an invalid resource; nothing applied")
                continue
            except kube.KubeError as e:
                metrics.MESH_SIDE_APPLIES.labels("error").inc()
                wait = max(delay, e.retry_after or 0.0)  # a throttled API server knows best
                log.warning("mesh-side: apply failed (%s); retrying in %.1fs", e, wait)
            except Exception:
                metrics.MESH_SIDE_APPLIES.labels("error").inc()
                log.exception("mesh-side: apply failed; retrying in %.1fs", delay)
            else:
                metrics.MESH_SIDE_APPLIES.labels("ok").inc()
                self.applied, delay = ports, self.retry_delay
                continue
            await asyncio.sleep(wait)
            delay = min(delay * 2, self.max_retry_delay)
            self._changed.set()

    async def _blocking(self, fn: Callable[..., T], *args: Any) -> T:
        if self.client is None:
            return await asyncio.to_thread(fn, *args)
        return await self.client.run(fn, *args)
