"""`lazyload fences list|reset`: the fence-reconciler admin API from the command line.

`list_fences(admin_url)` returns the `items` of `GET /api/v1/fences`; `reset(admin_url, namespace,
name)` calls `POST /api/v1/fences/{ns}/{name}/reset` (the fence forgets its learned hosts, keeps its
spec hosts, and a new revision is published) and returns the fence detail. Errors leave as
`FenceApiError` with the HTTP status and the server's message.

`Reconciler` is either, as the command line chose: `lazyload fences reset` resets one fence, several,
or every fence of a namespace with it.

Against a cluster (`list_in`, `reset_in`) the same calls go to a fence-reconciler pod through the
API server's pod proxy (`access.Target`); the reset's bearer token travels in
`X-Lazyload-Authorization` there, and the reconciler reviews it (TokenReview, then a
SubjectAccessReview: `update servicefences/status` in the fence's namespace).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

from lazyload_cli import access

TIMEOUT = 10.0


class FenceApiError(RuntimeError):
    """The admin API answered with an error, or could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def list_fences(admin_url: str) -> list[dict[str, Any]]:
    """Every fence, summarised: namespace, name, uid, enabled, revision, hosts, created_by."""
    items = _call("GET", admin_url, "/api/v1/fences").get("items", [])
    return list(items)


def reset(admin_url: str, namespace: str, name: str, *, token: str | None = None) -> dict[str, Any]:
    """Forget the learned hosts of fence `namespace/name`; the fence detail after the reset.
    `token`: the bearer token the admin API authorizes resets by."""
    return _call("POST", admin_url, f"/api/v1/fences/{namespace}/{name}/reset", token=token)


def list_in(target: access.Target) -> list[dict[str, Any]]:
    """`list_fences` of a cluster's (or a local stack's) fence-reconciler, as `target` reaches it."""
    body = target.admin_json("fence-reconciler", "/api/v1/fences")[0]
    return list(body.get("items", [])) if isinstance(body, dict) else []


def reset_in(target: access.Target, namespace: str, name: str, *, token: str) -> dict[str, Any]:
    """`reset` through `target` (a cluster: one fence-reconciler pod, via the pod proxy)."""
    path = f"/api/v1/fences/{namespace}/{name}/reset"
    instance, status, body = target.admin_post("fence-reconciler", path, token=token)
    if status >= 400:
        try:
            detail = json.loads(body).get("detail", body.decode(errors="replace"))
        except (ValueError, AttributeError):
            detail = body.decode(errors="replace")
        raise FenceApiError(f"POST {path} ({instance}): {status} {detail}", status)
    answer = json.loads(body)
    return answer if isinstance(answer, dict) else {}


@dataclass(frozen=True)
class Reconciler:
    """The fence-reconciler's admin API as the CLI reaches it: `url` (a local stack or --admin),
    else `target` (a cluster, through the pod proxy); `token` authorizes resets."""

    url: str | None = None
    target: access.Target | None = None
    token: str | None = None

    def fences(self) -> list[dict[str, Any]]:
        if self.url is not None:
            return list_fences(self.url)
        assert self.target is not None, "a Reconciler needs url or target"
        return list_in(self.target)

    def reset(self, namespace: str, name: str) -> dict[str, Any]:
        if self.url is not None:
            return reset(self.url, namespace, name, token=self.token)
        assert self.target is not None and self.token, "a cluster reset needs target and token"
        return reset_in(self.target, namespace, name, token=self.token)

    def in_namespace(self, namespace: str) -> list[tuple[str, str]]:
        """(namespace, name) of every fence of `namespace`, sorted."""
        return sorted(
            (f["namespace"], f["name"]) for f in self.fences() if f["namespace"] == namespace
        )


def _call(method: str, admin_url: str, path: str, *, token: str | None = None) -> dict[str, Any]:
    url = admin_url.rstrip("/") + path
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.request(method, url, timeout=TIMEOUT, headers=headers)
    except httpx.HTTPError as e:
        raise FenceApiError(f"{method} {url}: {e}") from e
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise FenceApiError(
            f"{method} {url}: {response.status_code} {detail}", response.status_code
        )
    body = response.json()
    return body if isinstance(body, dict) else {}
