"""Kubernetes access for every service, on the official `kubernetes` client.

`api_client()` builds the client from a kubeconfig (a real cluster, or the local Kubernetes API
emulator that tests and the demo use: the services cannot tell them apart). `KubeApi` makes JSON
requests by path through that client (auth, TLS and the kubeconfig stay the client's) and types the
errors; `Reflector` lists and watches a resource path into a local store, relisting on 410 Gone.

`AsyncKube` is the one client of a service: it owns the threads the blocking calls run in and
the client-side rate limit (`LAZYLOAD_KUBE__QPS`/`BURST`, `limiting.TokenBucket`) that every
request of the service obeys - its async calls, and through `AsyncKube.blocking` its
reflectors' lists and watches and its blocking adapters.

Errors are typed once, here, by what a consumer must do with the message at hand: each
`KubeError` is also an `errors.PermanentError` (400/413/415/422: dead-letter it) or an
`errors.TemporaryError` whose `delay` is the wait before the next try (409, 404, 401/403, 429,
5xx, and `KubeUnreachable` for the transport: no answer at all). `is_retryable` says which of
them a prompt retry in place may fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, TypeVar

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from prometheus_client import Histogram

from lazyload_common import errors
from lazyload_common.limiting import TokenBucket
from lazyload_common.settings import KubeSettings

log = logging.getLogger(__name__)
RawObject = dict[str, Any]
T = TypeVar("T")
DENIED_DELAY = 5.0
"""Seconds before a request refused with 401/403 is tried again (the first of a back-off)."""
THROTTLED_DELAY = 2.0
"""Seconds at least before a request answered 429 or 5xx is tried again (more on Retry-After)."""


class KubeError(errors.LazyloadError):
    """An error answer of the Kubernetes API, with the Status body cut to a safe length.

    `delay`: seconds before another try is worth it (the consume loops' redelivery delay)."""

    delay: float
    min_delay: ClassVar[float] = 1.0
    """The least `delay` of this kind of failure, whatever the server's Retry-After."""

    def __init__(
        self, status: int, reason: str, message: str, *, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after
        """Seconds the server asked to wait (its `Retry-After`, on 429 and 503), if it did."""
        self.delay = max(self.min_delay, retry_after or 0.0)


class KubeNotFound(KubeError, errors.TemporaryError):
    """404: the object (or its namespace, or its kind) does not exist. Temporary where it is
    not expected: a write may succeed once the namespace or the CRD is there."""


class KubeConflict(KubeError, errors.TemporaryError):
    """409: already exists, or a stale resourceVersion."""


class KubeUnprocessable(KubeError, errors.PermanentError):
    """400/413/415/422: the request will never succeed as it is (413: the object is larger than
    the API server stores)."""


class KubeDenied(KubeError, errors.TemporaryError):
    """401/403: the credentials are refused, or RBAC does not allow it. It says nothing about the
    message at hand: RBAC and credentials change under a running service (a Role re-applied by
    a GitOps tool, a token rotated, an authorization webhook away), so the services retry it
    with back-off from `DENIED_DELAY` and dead-letter a message only after its `max_deliver`
    deliveries (`make faults`: dead-lettering at the first 403 lost every edge of a 6 s RBAC
    outage)."""

    min_delay = DENIED_DELAY


class KubeTooManyRequests(KubeError, errors.TemporaryError):
    """429: throttled by the API server; `delay` is its Retry-After, at least `THROTTLED_DELAY`."""

    min_delay = THROTTLED_DELAY


class KubeServerError(KubeError, errors.TemporaryError):
    """5xx: the API server failed; worth a retry (after its Retry-After, at least
    `THROTTLED_DELAY`)."""

    min_delay = THROTTLED_DELAY


class KubeUnreachable(KubeError, errors.TemporaryError):
    """No answer at all (connection refused or reset, timeout, TLS, DNS): `status` 0. Raised
    by `AsyncKube`; the blocking `KubeApi` lets the transport's own errors through."""

    def __init__(self, message: str) -> None:
        super().__init__(0, "Unreachable", message)


def _retry_after(value: str | None) -> float | None:
    """`Retry-After` in seconds (the API server sends delta-seconds), capped at 10 minutes."""
    try:
        seconds = float(value) if value else None
    except ValueError:
        return None
    return None if seconds is None or seconds < 0 else min(seconds, 600.0)


def _error_for(status: int, body: bytes, retry_after: str | None = None) -> KubeError:
    reason, message = "", body[:256].decode("utf-8", "replace")
    try:
        parsed = json.loads(body)
        if isinstance(parsed, dict) and parsed.get("kind") == "Status":
            reason, message = str(parsed.get("reason", "")), str(parsed.get("message", ""))[:512]
    except ValueError:
        pass
    cls: type[KubeError] = KubeError
    if status == 404:
        cls = KubeNotFound
    elif status == 409:
        cls = KubeConflict
    elif status in (400, 413, 415, 422):
        cls = KubeUnprocessable
    elif status in (401, 403):
        cls = KubeDenied
    elif status == 429:
        cls = KubeTooManyRequests
    elif status >= 500:
        cls = KubeServerError
    return cls(status, reason, message, retry_after=_retry_after(retry_after))


TRANSPORT_ERRORS = (urllib3.exceptions.HTTPError, OSError)
"""What the official client raises when no answer came (besides `ApiException` of status 0)."""


def is_retryable(error: BaseException) -> bool:
    """True for errors that a prompt retry in place may fix: 409 conflicts, 429, 5xx and no
    answer at all. A 404, a 401/403 or a refused body is not (the first two may be fixed later,
    by someone else: that is a redelivery, after the error's `delay`)."""
    if isinstance(error, KubeConflict | KubeTooManyRequests | KubeServerError | KubeUnreachable):
        return True
    return isinstance(error, TRANSPORT_ERRORS) or _no_answer(error)


def _no_answer(error: BaseException) -> bool:
    """The official client's own exception for a request that got no answer (TLS: status 0)."""
    return isinstance(error, ApiException) and not error.status


def typed(error: BaseException) -> BaseException:
    """`error` as the typed error a caller handles: a transport failure (or the client's
    status-0 `ApiException`) becomes `KubeUnreachable`; anything else stays as it is."""
    if isinstance(error, TRANSPORT_ERRORS) or _no_answer(error):
        unreachable = KubeUnreachable(f"{type(error).__name__}: {str(error)[:300]}")
        unreachable.__cause__ = error
        return unreachable
    return error


def api_client(settings: KubeSettings) -> client.ApiClient:
    """An official-client ApiClient from the kubeconfig in `settings` (else in-cluster, else ~/.kube)."""
    if settings.kubeconfig is not None:
        return config.new_client_from_config(
            config_file=str(settings.kubeconfig), context=settings.context
        )
    try:
        config.load_incluster_config()
        return client.ApiClient()
    except config.ConfigException:
        return config.new_client_from_config(context=settings.context)


REQUEST_SECONDS = Histogram(
    "lazyload_kube_request_seconds",
    "Kubernetes API requests of this service (not watches), by verb (get, list, create, update, "
    "patch, delete), answered or failed",
    ["verb"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
_VERBS = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


class KubeApi:
    """JSON requests by path on the official client; blocking (from async code: `AsyncKube`).

    With a `limiter`, every request (and every watch it starts) first waits for a token of it.
    Every request's latency goes to `lazyload_kube_request_seconds{verb}`.
    """

    def __init__(
        self,
        api: client.ApiClient,
        *,
        timeout: float = 30.0,
        limiter: TokenBucket | None = None,
    ) -> None:
        self.api = api
        self.timeout = timeout
        self.limiter = limiter

    @classmethod
    def from_settings(cls, settings: KubeSettings, *, timeout: float = 30.0) -> KubeApi:
        """The blocking client of the kubeconfig in `settings`, limited to its `qps`/`burst`
        (for a service whose calls are all blocking: reflectors, a blocking adapter)."""
        limiter = TokenBucket(settings.qps, settings.burst)
        return cls(api_client(settings), timeout=timeout, limiter=limiter)

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | None = None,
        verb: str | None = None,
    ) -> RawObject:
        if self.limiter is not None:
            self.limiter.wait()
        with REQUEST_SECONDS.labels(verb or _VERBS.get(method.upper(), method.lower())).time():
            response = self._send(
                method,
                path,
                query=query,
                body=body,
                content_type=content_type,
                timeout=timeout or self.timeout,
            )
            data = response.read()
        if not 200 <= response.status <= 299:
            raise _error_for(response.status, data or b"", response.headers.get("Retry-After"))
        return json.loads(data) if data else {}

    def _send(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None,
        body: Any,
        content_type: str,
        timeout: float,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        params = [(k, v) for k, v in (query or {}).items() if v is not None]
        request = self.api.param_serialize(
            method,
            path,
            query_params=params,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        return self.api.call_api(*request, _request_timeout=timeout)

    def get(self, path: str) -> RawObject:
        return self.request("GET", path)

    def list(self, path: str, **query: Any) -> RawObject:
        return self.request("GET", path, query=query, verb="list")

    def create(self, path: str, body: RawObject) -> RawObject:
        return self.request("POST", path, body=body)

    def replace(self, path: str, body: RawObject) -> RawObject:
        return self.request("PUT", path, body=body)

    def merge_patch(self, path: str, body: RawObject) -> RawObject:
        return self.request("PATCH", path, body=body, content_type="application/merge-patch+json")

    def json_patch(self, path: str, ops: list[RawObject]) -> RawObject:
        return self.request("PATCH", path, body=ops, content_type="application/json-patch+json")

    def delete(self, path: str, *, uid: str = "", resource_version: str = "") -> RawObject:
        """DELETE `path`; with `uid`/`resource_version`, only that object as it was read (the
        server answers 409 when it was replaced or changed since)."""
        preconditions = {
            k: v for k, v in (("uid", uid), ("resourceVersion", resource_version)) if v
        }
        if not preconditions:
            return self.request("DELETE", path)
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": preconditions}
        return self.request("DELETE", path, body=body)

    def watch_lines(
        self,
        path: str,
        *,
        resource_version: str,
        timeout_seconds: int,
        label_selector: str | None = None,
    ) -> Iterator[RawObject]:
        """Yield watch events of `path` from `resource_version` until the server ends the stream."""
        query = {
            "watch": "true",
            "resourceVersion": resource_version,
            "timeoutSeconds": str(timeout_seconds),
            "allowWatchBookmarks": "true",
            "labelSelector": label_selector,
        }
        if self.limiter is not None:
            self.limiter.wait()
        response = self._send(
            "GET", path, query=query, body=None, content_type="", timeout=timeout_seconds + 10
        )
        if not 200 <= response.status <= 299:
            raise _error_for(response.status, response.read() or b"")
        raw = response.response
        try:
            buffer = b""
            for chunk in raw.stream(4096, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        finally:
            raw.release_conn()


class AsyncKube:
    """The Kubernetes client of a service: one thread pool, one rate limit, typed errors.

    `await call(fn, ...)` runs one blocking request of `api` (e.g. `kube.api.get`) in the pool
    after a token of `limiter`; its errors leave typed (a transport failure as
    `KubeUnreachable`, see `typed`). `await run(fn, ...)` runs blocking code that makes its own
    requests through `blocking` (the same client, each request waiting for a token in its
    thread); `blocking` is also what reflectors list and watch with. `get` ... `delete` are
    `call` of the `KubeApi` methods of the same names.

    Its own threads: the loop's default pool (CPU count + 4) would cap the calls in flight
    below a service's concurrency.
    """

    def __init__(
        self,
        api: client.ApiClient,
        *,
        qps: float = 50.0,
        burst: int = 100,
        threads: int = 8,
        timeout: float = 30.0,
        name: str = "kube-api",
    ) -> None:
        self.limiter = TokenBucket(qps, burst)
        self.api = KubeApi(api, timeout=timeout)
        """Unlimited: only for `call`, which takes the token first."""
        self.blocking = KubeApi(api, timeout=timeout, limiter=self.limiter)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)

    @classmethod
    def from_settings(cls, settings: KubeSettings, **kwargs: Any) -> AsyncKube:
        """The client of the kubeconfig in `settings`, limited to its `qps`/`burst`."""
        return cls(api_client(settings), qps=settings.qps, burst=settings.burst, **kwargs)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        await self.limiter.acquire()
        return await self.run(fn, *args, **kwargs)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))
        except Exception as e:
            error = typed(e)
            if error is e:
                raise
            raise error from e

    async def get(self, path: str) -> RawObject:
        return await self.call(self.api.get, path)

    async def list(self, path: str, **query: Any) -> RawObject:
        return await self.call(self.api.list, path, **query)

    async def create(self, path: str, body: RawObject) -> RawObject:
        return await self.call(self.api.create, path, body)

    async def replace(self, path: str, body: RawObject) -> RawObject:
        return await self.call(self.api.replace, path, body)

    async def merge_patch(self, path: str, body: RawObject) -> RawObject:
        return await self.call(self.api.merge_patch, path, body)

    async def delete(self, path: str, *, uid: str = "", resource_version: str = "") -> RawObject:
        return await self.call(self.api.delete, path, uid=uid, resource_version=resource_version)

    def close(self) -> None:
        """Release the threads and the client's connections (calls in flight finish)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.api.api.close()


ISTIO_NETWORKING = "networking.istio.io"
ISTIO_VERSIONS = ("v1", "v1beta1", "v1alpha3")
"""Versions of networking.istio.io, newest first: v1 since Istio 1.22, v1beta1 since 1.5."""


def served_version(kube: KubeApi, group: str, plural: str, versions: Sequence[str]) -> str | None:
    """The first of `versions` at which the server serves `plural` of `group` (discovery), or
    None when it serves none of them (the CRD is not installed yet)."""
    for version in versions:
        try:
            resources = kube.get(f"/apis/{group}/{version}").get("resources") or []
        except KubeNotFound:
            continue
        if any(r.get("name") == plural for r in resources):
            return version
    return None


def versioned_path(kube: KubeApi, template: str, versions: Sequence[str]) -> str:
    """`template` (`/apis/<group>/{version}/<plural>`) at the first of `versions` the server
    serves; KubeNotFound when it serves none."""
    _, _, group, _, plural = template.split("/", 4)
    version = served_version(kube, group, plural, versions)
    if version is None:
        raise KubeNotFound(404, "NotFound", f"{plural}.{group} is served at none of {versions}")
    return template.format(version=version)


def object_key(obj: RawObject) -> tuple[str, str]:
    meta = obj.get("metadata", {})
    return (meta.get("namespace", ""), meta.get("name", ""))


class Reflector:
    """Lists and watches one resource path into `store`, calling `on_change` in the event loop.

    `on_change(event_type, obj)` gets ADDED/MODIFIED/DELETED for each change and ("SYNCED", {})
    after every full (re)list, so a consumer can rebuild from `store` at that point. Runs in a
    daemon thread; a 410 Gone or a broken watch leads to a relist, never to a stale store.

    Memory: lists are read in pages of `page_size` (`limit`/`continue`), so a relist of a large
    cluster never holds the whole response text at once, and every stored object has its strings
    interned (`compact`): hosts, namespaces, timestamps and keys repeat across thousands of
    objects (a ServiceFence of 10 hosts takes about half the memory). A real API server's
    `metadata.managedFields` are not kept (they doubled a fence's size). `transform`, when given,
    is applied to every object before it is stored and handed on (e.g. to pack a large status).

    `versions`: `path` is a template `/apis/<group>/{version}/<plural>`, and every (re)list first
    asks discovery which of these versions the server serves (e.g. Istio 1.14-1.21 serve
    networking.istio.io v1beta1 and v1alpha3, not v1); until one is served it retries. After each
    watch that ends (every `watch_timeout`) it asks again, and relists at an earlier version of
    `versions` the server serves by then (an upgrade of the CRD, or a version that discovery
    showed a moment after another when the CRD was created).
    """

    def __init__(
        self,
        kube: KubeApi,
        path: str,
        *,
        on_change: Callable[[str, RawObject], None],
        loop: asyncio.AbstractEventLoop,
        label_selector: str | None = None,
        watch_timeout: int = 60,
        name: str = "",
        page_size: int = 500,
        transform: Callable[[RawObject], RawObject] | None = None,
        versions: Sequence[str] = (),
    ) -> None:
        self.kube, self.path, self.on_change, self.loop = kube, path, on_change, loop
        self.template, self.versions = path, tuple(versions)
        self.transform = transform
        self.label_selector = label_selector
        self.watch_timeout = watch_timeout
        self.page_size = page_size
        self.store: dict[tuple[str, str], RawObject] = {}
        self.synced = asyncio.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"reflector:{name or path}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _emit(self, kind: str, obj: RawObject) -> None:
        if self.loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed while we were stopping
            self.loop.call_soon_threadsafe(self._deliver, kind, obj)

    def _deliver(self, kind: str, obj: RawObject) -> None:
        if kind == "SYNCED":
            self.synced.set()
        self.on_change(kind, obj)

    def _run(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            try:
                rv = self._relist()
                backoff = 0.2
                while not self._stop.is_set():
                    rv = self._watch(rv)
                    if self._preferred_path() not in (None, self.path):
                        log.info("%s is served at a preferred version now: relisting", self.path)
                        break
            except _Gone:
                log.info("watch of %s expired (410), relisting", self.path)
            except Exception as e:
                if self._stop.is_set():
                    return
                log.warning("list/watch of %s failed: %s; retrying in %.1fs", self.path, e, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def _keep(self, obj: RawObject) -> RawObject:
        # managedFields (server-side apply bookkeeping a real API server puts on every object)
        # doubled a ServiceFence's memory; nothing here reads it, and nothing writes it back
        # (writes are PUT/merge patches of the fields lazyload owns)
        meta = obj.get("metadata")
        if isinstance(meta, dict):
            meta.pop("managedFields", None)
        obj = compact(obj)
        return self.transform(obj) if self.transform is not None else obj

    def _preferred_path(self) -> str | None:
        """The path at the first of `versions` served now; None without versions or when none
        is served (the watch's own errors then lead to the relist)."""
        if not self.versions:
            return None
        try:
            return versioned_path(self.kube, self.template, self.versions)
        except KubeNotFound:
            return None

    def _relist(self) -> str:
        if self.versions:
            self.path = versioned_path(self.kube, self.template, self.versions)
        started = time.monotonic()
        fresh: dict[tuple[str, str], RawObject] = {}
        token: str | None = None
        while True:
            query: dict[str, Any] = {"labelSelector": self.label_selector}
            if self.page_size > 0:
                query["limit"] = self.page_size
            if token:
                query["continue"] = token
            listed = self.kube.list(self.path, **query)
            for o in listed.get("items", []):
                fresh[object_key(o)] = self._keep(o)
            token = listed.get("metadata", {}).get("continue") or None
            if not token:
                break
        old = self.store
        self.store = fresh
        for key, obj in old.items():
            if key not in fresh:
                self._emit("DELETED", obj)
        for key, obj in fresh.items():
            if key not in old:
                self._emit("ADDED", obj)
            elif old[key].get("metadata", {}).get("resourceVersion") != obj["metadata"].get(
                "resourceVersion"
            ):
                self._emit("MODIFIED", obj)
        self._emit("SYNCED", {})
        log.info("listed %d %s in %.1f s", len(fresh), self.path, time.monotonic() - started)
        return str(listed.get("metadata", {}).get("resourceVersion", ""))

    def _watch(self, rv: str) -> str:
        started = time.monotonic()
        for event in self.kube.watch_lines(
            self.path,
            resource_version=rv,
            timeout_seconds=self.watch_timeout,
            label_selector=self.label_selector,
        ):
            if self._stop.is_set():
                return rv
            kind, obj = event.get("type", ""), event.get("object", {})
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise _Gone()
                raise KubeError(
                    int(obj.get("code", 500)),
                    str(obj.get("reason", "")),
                    str(obj.get("message", "")),
                )
            rv = str(obj.get("metadata", {}).get("resourceVersion", rv))
            if kind == "BOOKMARK":
                continue
            key = object_key(obj)
            if kind == "DELETED":
                self.store.pop(key, None)
            else:
                obj = self._keep(obj)
                self.store[key] = obj
            self._emit(kind, obj)
        if time.monotonic() - started < 0.05:
            self._stop.wait(0.5)  # a server that ends watches at once must not spin us
        return rv


class _Gone(Exception):
    pass


def compact(value: Any) -> Any:
    """`value` (parsed JSON) with every string and key interned: equal strings of many objects
    share one copy. Same structure and values; mutating the result is safe."""
    if isinstance(value, str):
        return sys.intern(value)
    if isinstance(value, dict):
        return {sys.intern(k): compact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [compact(v) for v in value]
    return value
