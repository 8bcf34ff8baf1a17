"""Who may call an admin endpoint that changes something (e.g. a fence reset).

Reads (`/healthz`, `/readyz`, `/metrics`, the fence views) stay open on the pod network; an
endpoint that mutates takes `Depends(guard.require(...))` and answers 401 without a valid bearer
token and 403 when the caller may not do it. `LAZYLOAD_ADMIN__AUTH` says how a token is checked:

- `kubernetes` (the default, as kube-rbac-proxy does): a TokenReview authenticates the token,
  then a SubjectAccessReview asks whether that user may do the action's verb on the action's
  resource in the namespace concerned (a reset: `update servicefences/status`); answers are
  cached for `auth_cache_seconds`;
- `token`: the token must equal the content of `token_file` (what `lazyload up` uses locally);
- `none`: no check, only allowed when the admin server binds a loopback address (a settings
  error otherwise).

Through the Kubernetes API server's pod proxy (`lazyload fences reset` against a cluster) the
`Authorization` header never arrives: the API server removes it once it has authenticated the
caller. The token then comes in `X-Lazyload-Authorization` (same `Bearer <token>` form), checked
the same way; `Authorization` wins when both are there.

Every refusal is counted in `lazyload_admin_refused_total{reason}`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request
from prometheus_client import Counter

from lazyload_common import errors, kube
from lazyload_common.settings import AdminSettings

log = logging.getLogger(__name__)

REFUSED = Counter(
    "lazyload_admin_refused_total",
    "Mutating admin requests refused, by reason (no_token, bad_token, forbidden, error)",
    ["reason"],
)
PROXIED_AUTHORIZATION = "X-Lazyload-Authorization"
"""The header carrying the bearer token through the API server's pod proxy (see above)."""
TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"
ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"


@dataclass(frozen=True)
class Action:
    """What a mutating endpoint does, as Kubernetes RBAC names it."""

    verb: str
    group: str
    resource: str
    subresource: str = ""


class AdminGuard:
    """Checks the bearer token of mutating admin requests."""

    def __init__(
        self,
        settings: AdminSettings,
        api: kube.KubeApi | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.api = api
        self.clock = clock
        self._token: bytes | None = None
        if settings.auth == "token" and settings.token_file is not None:
            self._token = settings.token_file.read_text().strip().encode()
        self._cache: dict[tuple[str, str, Action], tuple[float, bool]] = {}

    def require(self, action: Action) -> Callable[[Request], Awaitable[None]]:
        """A FastAPI dependency: the request's bearer token may do `action` in the request's
        `namespace` path parameter."""

        async def dependency(request: Request) -> None:
            await self.authorize(
                request.headers.get("authorization") or request.headers.get(PROXIED_AUTHORIZATION),
                action,
                namespace=str(request.path_params.get("namespace", "")),
            )

        return dependency

    async def authorize(self, header: str | None, action: Action, *, namespace: str) -> None:
        if self.settings.auth == "none":
            return
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            REFUSED.labels("no_token").inc()
            raise HTTPException(401, "a bearer token is required", {"WWW-Authenticate": "Bearer"})
        token = token.strip()
        if self.settings.auth == "token":
            if self._token is None or not hmac.compare_digest(token.encode(), self._token):
                REFUSED.labels("bad_token").inc()
                raise HTTPException(401, "invalid token", {"WWW-Authenticate": "Bearer"})
            return
        allowed = await self._kubernetes(token, action, namespace)
        if not allowed:
            REFUSED.labels("forbidden").inc()
            raise HTTPException(
                403, f"not allowed to {action.verb} {_resource(action)} in namespace {namespace}"
            )

    async def _kubernetes(self, token: str, action: Action, namespace: str) -> bool:
        digest = hashlib.sha256(token.encode()).hexdigest()
        key = (digest, namespace, action)
        cached = self._cache.get(key)
        now = self.clock()
        if cached is not None and now - cached[0] < self.settings.auth_cache_seconds:
            return cached[1]
        if self.api is None:
            raise HTTPException(503, "no Kubernetes API to review the token")
        try:
            user = await asyncio.to_thread(self._review_token, token)
            if user is None:
                REFUSED.labels("bad_token").inc()
                raise HTTPException(401, "invalid token", {"WWW-Authenticate": "Bearer"})
            allowed = await asyncio.to_thread(self._review_access, user, action, namespace)
        except errors.LazyloadError as e:
            REFUSED.labels("error").inc()
            log.warning("admin auth: review failed: %s", e)
            raise HTTPException(503, "could not review the token") from e
        if len(self._cache) > 1024:
            self._cache.clear()
        self._cache[key] = (now, allowed)
        return allowed

    def _review_token(self, token: str) -> dict[str, Any] | None:
        assert self.api is not None
        review = self.api.create(
            TOKEN_REVIEWS,
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "spec": {"token": token},
            },
        )
        status = review.get("status") or {}
        return status.get("user") if status.get("authenticated") else None

    def _review_access(self, user: dict[str, Any], action: Action, namespace: str) -> bool:
        assert self.api is not None
        attributes = {
            "namespace": namespace,
            "verb": action.verb,
            "group": action.group,
            "resource": action.resource,
            "subresource": action.subresource,
        }
        review = self.api.create(
            ACCESS_REVIEWS,
            {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": {
                    "user": user.get("username", ""),
                    "uid": user.get("uid", ""),
                    "groups": user.get("groups") or [],
                    "extra": user.get("extra") or {},
                    "resourceAttributes": attributes,
                },
            },
        )
        return bool((review.get("status") or {}).get("allowed"))


def _resource(action: Action) -> str:
    name = f"{action.resource}/{action.subresource}" if action.subresource else action.resource
    return f"{name}.{action.group}" if action.group else name
