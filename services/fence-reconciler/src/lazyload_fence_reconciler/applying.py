"""The one module that writes ServiceFences, through the service's `kube.AsyncKube` (its threads,
its rate limit, its typed errors), and the ConfigMap of tombstones of deleted manual fences (one
key per fence, set and cleared by JSON merge patch: the server applies it to the latest version
and leaves every other key as it is, so replicas writing different fences never lose each
other's entries - no read-modify-write whose resourceVersion could race; created when missing).

Status goes through the `/status` subresource with the object's resourceVersion: a 409 means
someone wrote in between (the other replica, a user, our own stale cache), so the fence is
re-read and the computation re-applied, `conflict_retries` times at most; then a TemporaryError.
Kube errors leave as `lazyload_common.kube` types them, the errors the consume loop understands:
400/413/415/422 are permanent (the edges are dead-lettered with the reason), 429/5xx are
temporary after the server's Retry-After, and so are 401/403 (RBAC and credentials change:
retried from `kube.DENIED_DELAY` with the consume loop's back-off, dead-lettered after
`fence.max_deliver` deliveries).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from lazyload_common import errors, kube

from lazyload_fence_reconciler import fences, metrics

log = logging.getLogger(__name__)
T = TypeVar("T")
Computation = Callable[[kube.RawObject], tuple[dict[str, Any] | None, T]]
"""From the current object: (the status to write, or None for no write; a result to return)."""


def collection_path(namespace: str) -> str:
    return f"/apis/{fences.GROUP}/{fences.VERSION}/namespaces/{namespace}/{fences.PLURAL}"


def object_path(namespace: str, name: str) -> str:
    return f"{collection_path(namespace)}/{name}"


TOMBSTONE_MAP = ("mesh-operator", "lazyload-fence-tombstones")
"""Default (namespace, name) of the tombstones' ConfigMap (settings: mesh.global_sidecar_namespace,
fence.tombstone_config_map)."""
TOMBSTONE_MAP_LABELS = {
    "app.kubernetes.io/managed-by": "lazyload-fence-reconciler",
    "lazyload.io/store": "fence-tombstones",
}
"""The tombstones' ConfigMap's labels (`watching.TOMBSTONES_SELECTOR` selects it)."""


class Applier:
    """Reads and writes ServiceFences."""

    def __init__(
        self,
        client: kube.AsyncKube,
        *,
        conflict_retries: int = 5,
        istio_rev: str = "",
        tombstone_map: tuple[str, str] = TOMBSTONE_MAP,
    ) -> None:
        self.kube = client
        self.api = client.api
        self.tombstone_map = tombstone_map
        # the client-side rate limit (kube.qps/burst): thousands of Services fenced at a cold
        # start are created at that pace, not at once
        self.limiter = client.limiter
        self.conflict_retries = conflict_retries
        self.istio_rev = istio_rev

    async def get(self, namespace: str, name: str) -> kube.RawObject | None:
        try:
            return await self._call(self.api.get, object_path(namespace, name))
        except kube.KubeNotFound:
            return None

    async def create(
        self, namespace: str, name: str, workload_labels: fences.Selector | None = None
    ) -> kube.RawObject:
        """Create the auto fence; if it exists already, return the existing one."""
        body = fences.new_fence_body(namespace, name, workload_labels, istio_rev=self.istio_rev)
        try:
            created = await self._call(self.api.create, collection_path(namespace), body)
        except kube.KubeConflict:
            existing = await self.get(namespace, name)
            if existing is None:
                raise errors.TemporaryError(f"fence {namespace}/{name} flickered") from None
            return existing
        metrics.WRITES.labels("create").inc()
        log.info("created ServiceFence %s/%s", namespace, name)
        return created

    async def delete(self, obj: kube.RawObject) -> None:
        """Delete the fence `obj` as it was read (uid and resourceVersion preconditions): one
        replaced or changed since (a user took it over, say) is not deleted, and the caller
        decides again (TemporaryError)."""
        meta = obj.get("metadata", {})
        namespace, name = meta.get("namespace", ""), meta.get("name", "")
        delete = functools.partial(
            self.api.delete,
            uid=str(meta.get("uid", "")),
            resource_version=str(meta.get("resourceVersion", "")),
        )
        try:
            await self._call(delete, object_path(namespace, name))
        except kube.KubeNotFound:
            return
        except kube.KubeConflict as e:
            raise errors.TemporaryError(
                f"ServiceFence {namespace}/{name} changed since it was read: not deleted",
                delay=1.0,
            ) from e
        metrics.WRITES.labels("delete").inc()

    async def mark_tombstone(self, entry: str, value: str | None) -> bool:
        """Set (or, with None, remove) key `entry` of the tombstones' ConfigMap, creating the
        ConfigMap when it is missing; False when the write failed (logged; the caller keeps the
        tombstone in memory)."""
        try:
            await self._patch_tombstone(entry, value)
        except kube.KubeNotFound:
            if value is None:
                return True  # no ConfigMap: nothing to clear
            if not await self.create_tombstones({entry: value}):
                return False
        except (kube.KubeError, errors.LazyloadError) as e:
            log.warning(
                "tombstone %s not written to ConfigMap %s/%s: %s", entry, *self.tombstone_map, e
            )
            metrics.TOMBSTONE_FAILURES.inc()
            return False
        metrics.WRITES.labels("tombstone" if value is not None else "untombstone").inc()
        return True

    async def create_tombstones(self, entries: dict[str, str]) -> bool:
        """Create the tombstones' ConfigMap holding `entries`; if another replica created it in
        between, merge `entries` into it. False when the write failed (logged)."""
        namespace, name = self.tombstone_map
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace, "labels": TOMBSTONE_MAP_LABELS},
            "data": entries,
        }
        try:
            try:
                await self._call(
                    self.api.create, f"/api/v1/namespaces/{namespace}/configmaps", body
                )
            except kube.KubeConflict:
                for entry, value in entries.items():
                    await self._patch_tombstone(entry, value)
        except (kube.KubeError, errors.LazyloadError) as e:
            log.warning("tombstones' ConfigMap %s/%s not created: %s", namespace, name, e)
            metrics.TOMBSTONE_FAILURES.inc()
            return False
        log.info(
            "created the tombstones' ConfigMap %s/%s (%d entries)", namespace, name, len(entries)
        )
        return True

    async def _patch_tombstone(self, entry: str, value: str | None) -> None:
        namespace, name = self.tombstone_map
        path = f"/api/v1/namespaces/{namespace}/configmaps/{name}"
        await self._call(self.api.merge_patch, path, {"data": {entry: value}})

    async def apply_status(
        self, obj: kube.RawObject, compute: Computation[T]
    ) -> tuple[kube.RawObject, T]:
        """Write `compute(obj)`'s status with optimistic concurrency; re-read and retry on 409."""
        meta = obj.get("metadata", {})
        namespace, name = meta.get("namespace", ""), meta.get("name", "")
        for attempt in range(self.conflict_retries + 1):
            status, result = compute(obj)
            if status is None:
                return obj, result
            body = {**obj, "status": status}
            try:
                written = await self._call(
                    self.api.replace, object_path(namespace, name) + "/status", body
                )
            except kube.KubeConflict:
                metrics.CONFLICTS.inc()
                log.debug("conflict writing %s/%s (attempt %d)", namespace, name, attempt + 1)
                fresh = await self.get(namespace, name)
                if fresh is None:
                    break
                obj = fresh
                continue
            except kube.KubeNotFound:
                break
            metrics.WRITES.labels("status").inc()
            return written, result
        raise errors.TemporaryError(
            f"fence {namespace}/{name}: still conflicting or gone after "
            f"{self.conflict_retries} retries",
            delay=1.0,
        )

    async def _call(self, fn: Callable[..., kube.RawObject], *args: Any) -> kube.RawObject:
        try:
            return await self.kube.call(fn, *args)
        except kube.KubeUnprocessable as e:
            # 400/413/415/422 (413: the status outgrew what the API server stores): permanent,
            # and the dead letter says what refused it
            raise errors.PermanentError(f"fence request refused: {e}") from e
