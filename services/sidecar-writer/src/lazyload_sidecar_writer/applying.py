"""The one module that talks to the Kubernetes API: reads the stored Sidecar, carries out the plan.

Each fence is one read-decide-write cycle (`planning.plan`) on the stored resourceVersion. A 409
(stale resourceVersion, or created meanwhile), a 429, a 5xx or a transport failure starts the cycle
again after an exponential backoff with jitter (tenacity); when the attempts run out the fence is
redelivered later (`RetriesExhausted`). A 400/413/415/422 is permanent (`ApiRejected`:
dead-letter with the reason; a fence event retried for ever on an object too large would never
settle). A 401/403 is redelivered later (`Denied`): RBAC and credentials change under a running
writer, and `sidecar.max_deliver` bounds the retries of a rule that stays missing. (The errors
are typed by `lazyload_common.kube`, whose `is_retryable` decides what is retried in place.)
Calls go through the writer's `kube.AsyncKube`: its threads, its client-side rate limit.
The Sidecars this replica wrote are remembered (`sidecar.written_cache`, least recently used out):
the next cycle of the same fence plans on that object instead of a GET, so a fence that grows
costs one write per revision, not a read and a write; a fence with nothing remembered is first
tried as a create (a new fence costs one call). Someone else's change since, or a Sidecar that
already exists, shows up as a 409 (or a 404), and the retry reads afresh.

Staleness across replicas is decided from the stored Sidecar's `lazyload.io/fence-revision`
(`planning`). A deleted Sidecar carries no revision, so before a `create` the sink also asks
`newest_revision` (given by the app: the revision of the last event of the fence's subject in
LAZYLOAD_FENCES): an event older than that is stale, so a reordered enabled revision cannot bring
back the Sidecar of a fence a newer revision disabled, whichever replica handles it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from lazyload_common import events, kube
from lazyload_common.errors import TemporaryError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from lazyload_sidecar_writer import errors, metrics, planning, rendering
from lazyload_sidecar_writer.bounded import Lru
from lazyload_sidecar_writer.rendering import RawObject
from lazyload_sidecar_writer.settings import WriterSettings
from lazyload_sidecar_writer.sinks import Result, Write

log = logging.getLogger(__name__)
T = TypeVar("T")
NewestRevision = Callable[[events.FenceChanged], Awaitable[int | None]]


class _Replan(Exception):
    """The stored Sidecar changed between read and write (e.g. deleted before a PUT)."""


def retryable(error: BaseException) -> bool:
    """Worth another attempt in place: what `kube.is_retryable` says, and a replan."""
    return isinstance(error, _Replan) or kube.is_retryable(error)


def path(api_version: str, namespace: str | None = None, name: str | None = None) -> str:
    """API path of Sidecars: all of them, those of `namespace`, or one."""
    base = f"/apis/{rendering.GROUP}/{api_version}"
    if namespace is None:
        return f"{base}/sidecars"
    return f"{base}/namespaces/{namespace}/sidecars" + (f"/{name}" if name else "")


class KubeSink:
    """Applies Sidecars through the writer's `kube.AsyncKube` (see the module docstring)."""

    def __init__(
        self,
        client: kube.AsyncKube,
        settings: WriterSettings,
        *,
        newest_revision: NewestRevision | None = None,
    ) -> None:
        self.kube = client
        self.api = client.api
        """The blocking requests `call` takes (e.g. `sink.call(sink.api.get, path)`)."""
        self.settings = settings
        self.version = settings.sidecar.api_version
        self.reachable = False
        self.newest_revision = newest_revision
        config = settings.sidecar
        # Sidecars this replica wrote (None when `written_cache` is 0: always read first)
        self._written: Lru[tuple[str, str], RawObject] | None = (
            Lru(config.written_cache) if config.written_cache > 0 else None
        )
        self._stop = stop_after_attempt(config.retry_attempts)
        self._wait = wait_exponential_jitter(
            multiplier=config.retry_initial, max=config.retry_max, jitter=config.retry_initial
        )

    def _wait_or_retry_after(self, state: RetryCallState) -> float:
        """The back-off, or the server's Retry-After (429/503) when that is longer."""
        error = state.outcome.exception() if state.outcome is not None else None
        asked = getattr(error, "retry_after", None) or 0.0
        return max(float(self._wait(state)), asked)

    async def apply(self, event: events.FenceChanged, desired: RawObject | None) -> Result:
        """Bring the stored Sidecar of `event`'s fence to `desired` (None = delete it)."""
        config = self.settings.sidecar
        retrying = AsyncRetrying(
            stop=self._stop,
            wait=self._wait_or_retry_after,
            retry=retry_if_exception(retryable),
            before_sleep=_log_retry,
            reraise=True,
        )
        key = f"{event.namespace}/{event.name}"
        # A newer revision of this fence is already in the stream (so it is or was delivered to
        # us too): nothing to do, and no API call - not even the GET - spent on it. Behind a
        # burst the writer otherwise pays a rate-limited read for every superseded revision.
        newest = await self._newest(event)
        if newest is not None and newest > event.revision:
            return Result(
                "stale", message=f"fence revision {event.revision} < {newest} in the stream"
            )
        try:
            async for attempt in retrying:
                with attempt:
                    first = attempt.retry_state.attempt_number == 1
                    return await self._apply_once(event, desired, remembered=first)
        except kube.KubeUnprocessable as e:  # 400/413/415/422
            raise errors.ApiRejected(f"API refused Sidecar {key}: {e}") from e
        except kube.KubeDenied as e:  # 401/403: RBAC and credentials change
            raise errors.Denied(
                f"API denied Sidecar {key}: {e}", delay=config.redelivery_delay
            ) from e
        except (kube.KubeError, _Replan) as e:
            if retryable(e):
                raise errors.RetriesExhausted(
                    f"Sidecar {key}: {config.retry_attempts} attempts failed, last: {e}",
                    delay=config.redelivery_delay,
                ) from e
            # 404 on a write (the CRD is missing): may be installed
            raise TemporaryError(f"Sidecar {key}: {e}", delay=config.redelivery_delay) from e
        raise AssertionError("unreachable")

    async def _apply_once(
        self, event: events.FenceChanged, desired: RawObject | None, *, remembered: bool = True
    ) -> Result:
        key = (event.namespace, event.name)
        memory = self._written if remembered else None
        current = memory.get(key) if memory is not None else None
        read = current is None and (memory is None or desired is None)
        if read:
            current = await self.get(event.namespace, event.name)
        # else: nothing remembered - plan a create without reading first; a Sidecar that exists
        # answers 409 AlreadyExists and the retry reads it (one call for a new fence, not two)
        try:
            return await self._carry_out(
                event,
                desired,
                current,
                unread=current is None,
                # `apply` asked the stream just now, unless an API call or a retry came between
                recheck=read or not remembered,
            )
        except Exception:
            self.forget(*key)  # the next attempt reads afresh
            raise

    async def _carry_out(
        self,
        event: events.FenceChanged,
        desired: RawObject | None,
        current: RawObject | None,
        *,
        unread: bool = False,
        recheck: bool = True,
    ) -> Result:
        decision = planning.plan(event, desired, current)
        ns, name = event.namespace, event.name
        if decision.action == "create":
            assert decision.body is not None
            newest = await self._newest(event) if recheck else None
            if newest is not None and newest > event.revision:
                return Result(
                    "stale", message=f"fence revision {event.revision} < {newest} in the stream"
                )
            try:
                created = await self.call(
                    self.api.create, path(self.version, ns), decision.body, conflict_ok=unread
                )
            except kube.KubeConflict as e:
                if not unread:
                    raise
                raise _Replan(f"Sidecar {ns}/{name} exists: read it and plan again") from e
            self._remember(created)
            return _written("create", created)
        if decision.action == "replace":
            assert decision.body is not None
            try:
                replaced = await self.call(
                    self.api.replace, path(self.version, ns, name), decision.body
                )
            except kube.KubeNotFound as e:
                raise _Replan(f"Sidecar {ns}/{name} vanished before the replace") from e
            self._remember(replaced)
            return _written("replace", replaced)
        if decision.action == "delete":
            self.forget(ns, name)
            await self.delete(ns, name, decision.resource_version)
            return Result("deleted", write="delete")
        if decision.action == "absent":
            return Result("deleted", message=decision.message)
        if decision.action == "unchanged":
            return Result("unchanged", resource_version=decision.resource_version)
        return Result(decision.action, message=decision.message, reason=decision.reason)

    def _remember(self, stored: RawObject) -> None:
        if self._written is not None:
            meta = stored.get("metadata", {})
            self._written.set((str(meta.get("namespace", "")), str(meta.get("name", ""))), stored)

    def forget(self, namespace: str, name: str) -> None:
        """Drop what this replica remembers of a Sidecar (someone else changed or deleted it)."""
        if self._written is not None:
            self._written.pop((namespace, name))

    async def _newest(self, event: events.FenceChanged) -> int | None:
        """The newest revision of the fence known elsewhere (None = unknown or lookup failed)."""
        if self.newest_revision is None:
            return None
        try:
            return await self.newest_revision(event)
        except Exception as e:  # the guard is an extra: never block a write on it
            log.debug("newest revision of %s/%s unknown: %s", event.namespace, event.name, e)
            return None

    async def get(self, namespace: str, name: str) -> RawObject | None:
        """The stored Sidecar, or None."""
        try:
            return await self.call(
                self.api.get, path(self.version, namespace, name), missing_ok=True
            )
        except kube.KubeNotFound:
            return None

    async def delete(self, namespace: str, name: str, resource_version: str = "") -> None:
        """Delete a Sidecar (only the read version, when given); a 404 means done already."""
        body: RawObject = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if resource_version:
            body["preconditions"] = {"resourceVersion": resource_version}
        with contextlib.suppress(kube.KubeNotFound):
            await self.call(
                self._delete_with_options,
                path(self.version, namespace, name),
                body,
                missing_ok=True,
            )

    def _delete_with_options(self, api_path: str, body: RawObject) -> RawObject:
        return self.api.request("DELETE", api_path, body=body)

    async def list_managed(self) -> list[RawObject]:
        """Every Sidecar of every namespace that carries lazyload's managed-by label."""
        selector = f"{rendering.MANAGED_BY_LABEL}={rendering.MANAGED_BY}"
        listed = await self.call(self.api.list, path(self.version), labelSelector=selector)
        return list(listed.get("items", []))

    async def probe(self) -> bool:
        """List one Sidecar: the API answers, the CRD is served and we may read it."""
        try:
            await self.call(self.api.list, path(self.version), limit=1)
        except Exception as e:
            log.debug("API probe failed: %s", e)
            return False
        return True

    async def call(
        self,
        fn: Callable[..., T],
        *args: Any,
        missing_ok: bool = False,
        conflict_ok: bool = False,
        **kwargs: Any,
    ) -> T:
        """`fn(*args, **kwargs)` through the client (its threads, its rate limit, its typed
        errors); errors counted (except an expected 404 or 409), no answer as `network`."""
        try:
            result = await self.kube.call(fn, *args, **kwargs)
        except kube.KubeError as e:
            expected = (missing_ok and isinstance(e, kube.KubeNotFound)) or (
                conflict_ok and isinstance(e, kube.KubeConflict)
            )
            if not expected:
                metrics.API_ERRORS.labels(str(e.status or "network")).inc()
            if isinstance(e, kube.KubeServerError | kube.KubeUnreachable):
                self.reachable = False
            raise
        self.reachable = True
        return result


def _written(write: Write, stored: RawObject) -> Result:
    rv = str(stored.get("metadata", {}).get("resourceVersion", ""))
    return Result("applied", resource_version=rv, write=write)


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    log.info("Sidecar API attempt %d failed (%s); retrying", state.attempt_number, error)
