"""The one module that writes ServiceFences, through the service's `kube.AsyncKube` (its threads,
its rate limit, its typed errors),
and the one annotation the reconciler owns on Services (`lazyload.io/fence-deleted`, the tombstone
of a deleted manual fence, set and cleared by merge-patch).

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


class Applier:
    """Reads and writes ServiceFences."""

    def __init__(
        self,
        client: kube.AsyncKube,
        *,
        conflict_retries: int = 5,
        istio_rev: str = "",
    ) -> None:
        self.kube = client
        self.api = client.api
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

    async def mark_service(self, namespace: str, name: str, value: str | None) -> bool:
        """Set (or, with None, remove) the tombstone annotation of Service `namespace/name`;
        False when there is no such Service."""
        body = {"metadata": {"annotations": {fences.TOMBSTONE_ANNOTATION: value}}}
        try:
            await self._call(
                self.api.merge_patch, f"/api/v1/namespaces/{namespace}/services/{name}", body
            )
        except kube.KubeNotFound:
            return False
        except (kube.KubeError, errors.LazyloadError) as e:
            # Without RBAC to patch Services (or with the API down) the tombstone stays in memory.
            log.warning("tombstone of %s/%s not persisted: %s", namespace, name, e)
            return False
        metrics.WRITES.labels("tombstone" if value is not None else "untombstone").inc()
        return True

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
