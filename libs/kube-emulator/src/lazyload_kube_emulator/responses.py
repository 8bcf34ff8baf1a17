"""Responses in the API server's style: compact JSON (or protobuf for clients that accept only
protobuf), `Warning` headers, `Status` errors."""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .content import request_protobuf
from .errors import ApiError, status_body
from .kubeproto import MEDIA_TYPE as PROTOBUF
from .kubeproto import ProtobufError, codec

log = logging.getLogger(__name__)


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _with_warnings(response: Response, warnings: list[str] | None) -> Response:
    for warning in warnings or []:
        escaped = warning.replace("\\", "\\\\").replace('"', '\\"')
        response.headers.append("Warning", f'299 - "{escaped}"')
    return response


def json_response(obj: Any, status: int = 200, warnings: list[str] | None = None) -> Response:
    response = Response(dumps(obj), status_code=status, media_type="application/json")
    return _with_warnings(response, warnings)


def api_response(
    request: Request, obj: Any, status: int = 200, warnings: list[str] | None = None
) -> Response:
    """obj as JSON, or as protobuf where the dispatcher negotiated it."""
    if not request_protobuf(request):
        return json_response(obj, status, warnings)
    try:
        body = codec().encode(obj)
    except ProtobufError as exc:
        # only a stored built-in object the API server would have refused gets here
        failure = status_body(500, f"the object cannot be encoded as protobuf: {exc}")
        return json_response(failure, 500)
    return _with_warnings(Response(body, status_code=status, media_type=PROTOBUF), warnings)


async def api_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    response = api_response(request, exc.body(), exc.code)
    for name, value in exc.headers.items():
        response.headers[name] = value
    return response


async def http_error_handler(request: Request, exc: Exception) -> Response:
    code = getattr(exc, "status_code", 500)
    message = getattr(exc, "detail", None) or "the server could not find the requested resource"
    return json_response(status_body(code, str(message)), code)


async def unexpected_error_handler(request: Request, exc: Exception) -> Response:
    log.exception("Kubernetes API emulator failed on %s %s", request.method, request.url.path)
    return json_response(status_body(500, f"emulator internal error: {exc!r}"), 500)
