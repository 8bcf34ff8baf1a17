"""The resource endpoints: one dispatcher per group version turning verbs into operations."""

from __future__ import annotations

import base64
import bisect
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from . import authz, content, operations
from .copying import clone
from .emulator import Emulator
from .errors import ApiError, bad_request, method_not_allowed, success_status
from .objects import with_version
from .paths import Target, resolve
from .resources import RETURNS_DELETED_OBJECT
from .responses import api_response, json_response
from .selectors import build_filter
from .tables import TABLE_MARKER, to_table
from .watch import is_watch, watch_response


async def core_endpoint(request: Request) -> Response:
    return await dispatch(request, "", "v1", request.path_params["rest"])


async def group_endpoint(request: Request) -> Response:
    params = request.path_params
    return await dispatch(request, params["group"], params["version"], params["rest"])


async def dispatch(request: Request, group: str, version: str, rest: str) -> Response:
    emu: Emulator = request.app.state.emulator
    target = resolve(emu.registry, group, version, rest)
    # from here on, errors too are protobuf for a client that accepts only protobuf
    accept = request.headers.get("accept")
    request.state.protobuf = content.accepts_only_protobuf(accept)
    content.check_acceptable(accept, target.info)
    if emu.config.authorize:
        watching = target.legacy_watch or is_watch(request.query_params)
        attrs = authz.Attributes(
            verb=authz.request_verb(request.method, target.name is not None, watching),
            api_group=group,
            resource=target.info.plural,
            subresource=target.subresource,
            namespace=target.namespace,
            name=target.name,
        )
        authz.authorize(emu, request.headers.get("authorization"), attrs)
    if target.name is None:
        return await _collection(request, emu, target)
    return await _item(request, emu, target)


async def _collection(request: Request, emu: Emulator, target: Target) -> Response:
    method, query = request.method, request.query_params
    if method == "GET":
        if target.legacy_watch or is_watch(query):
            table = TABLE_MARKER in request.headers.get("accept", "")
            return watch_response(emu, target, query, table, content.request_protobuf(request))
        return _list(request, emu, target)
    if target.info.namespaced and target.namespace is None:
        raise method_not_allowed(method)
    if method == "POST":
        opts = _write_options(request)
        obj = operations.create(emu, target, await _body(request, target), opts)
        return api_response(request, obj, 201, opts.warnings)
    if method == "DELETE":
        return await _delete_collection(request, emu, target)
    raise method_not_allowed(method)


async def _item(request: Request, emu: Emulator, target: Target) -> Response:
    method = request.method
    if method == "GET":
        obj = with_version(target.info, target.version, operations.get_or_404(emu, target))
        if TABLE_MARKER in request.headers.get("accept", ""):
            obj = to_table(target, obj, request.query_params.get("includeObject"))
            return json_response(obj)
        return api_response(request, obj)
    opts = _write_options(request)
    if method == "PUT":
        obj = operations.replace(emu, target, await _body(request, target), opts)
    elif method == "PATCH":
        content_type = request.headers.get("content-type", "")
        obj = operations.patch(emu, target, await request.body(), content_type, opts)
    elif method == "DELETE" and target.subresource is None:
        return await _delete(request, emu, target, opts)
    else:
        raise method_not_allowed(method)
    return api_response(request, obj, 200, opts.warnings)


async def _delete(
    request: Request, emu: Emulator, target: Target, opts: operations.WriteOptions
) -> Response:
    obj, gone = operations.delete(emu, target, await _delete_options(request, target), opts)
    info = target.info
    if not gone or not info.builtin or info.key in RETURNS_DELETED_OBJECT:
        return api_response(request, obj, 200, opts.warnings)
    details = {"name": target.name, "kind": info.plural, "uid": obj["metadata"].get("uid")}
    if info.group:
        details["group"] = info.group
    return api_response(request, success_status(details), 200, opts.warnings)


async def _delete_collection(request: Request, emu: Emulator, target: Target) -> Response:
    opts = _write_options(request)
    options = await _delete_options(request, target)
    query = request.query_params
    matches = build_filter(target.namespace, query.get("labelSelector"), query.get("fieldSelector"))
    deleted = []
    for obj in emu.store.list(target.info.key, matches):
        meta = obj["metadata"]
        one = Target(target.info, target.version, meta.get("namespace"), meta["name"])
        deleted.append(operations.delete(emu, one, options, opts)[0])
    return api_response(request, _list_body(emu, target, deleted), 200, opts.warnings)


def _list_body(emu: Emulator, target: Target, items: list[dict[str, Any]]) -> dict[str, Any]:
    info = target.info
    return {
        "kind": info.list_kind,
        "apiVersion": info.api_version(target.version),
        "metadata": {"resourceVersion": str(emu.store.resource_version)},
        "items": [with_version(info, target.version, o) for o in items],
    }


def _list(request: Request, emu: Emulator, target: Target) -> Response:
    query = request.query_params
    matches = build_filter(target.namespace, query.get("labelSelector"), query.get("fieldSelector"))
    # filter and page the stored objects as they are, then copy only the page: a paged list of
    # N objects costs N, not N per page
    stored = [o for o in emu.store.iter_raw(target.info.key) if matches is None or matches(o)]
    page, token, remaining = _page(stored, query.get("limit"), query.get("continue"))
    body = _list_body(emu, target, [clone(o) for o in page])
    if token:
        body["metadata"]["continue"] = token
        body["metadata"]["remainingItemCount"] = remaining
    if TABLE_MARKER in request.headers.get("accept", ""):
        return json_response(to_table(target, body, query.get("includeObject")))
    return api_response(request, body)


def _page(
    items: list[dict[str, Any]], limit: str | None, token: str | None
) -> tuple[list[dict[str, Any]], str | None, int]:
    if token:
        try:
            start = tuple(json.loads(base64.urlsafe_b64decode(token.encode())))
        except ValueError as exc:
            raise bad_request(f"invalid continue token: {exc}") from exc
        # items are sorted by position: skip to the first one after the token
        items = items[bisect.bisect_right([_position(o) for o in items], start) :]
    size = int(limit) if limit and limit.isdigit() and int(limit) > 0 else 0
    if not size or len(items) <= size:
        return items, None, 0
    page = items[:size]
    next_token = base64.urlsafe_b64encode(json.dumps(_position(page[-1])).encode()).decode()
    return page, next_token, len(items) - size


def _position(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj["metadata"]
    return (meta.get("namespace") or "", meta["name"])


def _write_options(request: Request) -> operations.WriteOptions:
    query = request.query_params
    dry_run = query.getlist("dryRun")
    if any(d != "All" for d in dry_run):
        raise bad_request(f"unsupported dryRun value {dry_run}: only All is supported")
    validation = query.get("fieldValidation", "")
    if validation not in ("", "Ignore", "Warn", "Strict"):
        raise bad_request(f"invalid fieldValidation {validation!r}")
    return operations.WriteOptions(dry_run=bool(dry_run), field_validation=validation)


async def _body(request: Request, target: Target) -> Any:
    return content.decode_body(
        await request.body(), request.headers.get("content-type"), target.info
    )


async def _delete_options(request: Request, target: Target) -> dict[str, Any]:
    raw = await request.body()
    policy = request.query_params.get("propagationPolicy")
    if policy not in (None, "Orphan", "Background", "Foreground"):
        raise bad_request(f"invalid propagationPolicy {policy!r}")
    if not raw.strip():
        return {"propagationPolicy": policy} if policy else {}
    content_type = request.headers.get("content-type")
    if content.media_type(content_type) == content.PROTOBUF:
        options = content.decode_body(raw, content_type, target.info)
    else:
        try:
            options = json.loads(raw)
        except ValueError as exc:
            raise bad_request(f"invalid DeleteOptions: {exc}") from exc
    if not isinstance(options, dict):
        raise ApiError(400, "DeleteOptions must be a JSON object")
    if policy:
        options.setdefault("propagationPolicy", policy)
    return options
