"""JSON responses in the API server's style (compact JSON, `Warning` headers, `Status` errors)."""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .errors import ApiError, status_body

log = logging.getLogger(__name__)


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def json_response(obj: Any, status: int = 200, warnings: list[str] | None = None) -> Response:
    response = Response(dumps(obj), status_code=status, media_type="application/json")
    for warning in warnings or []:
        escaped = warning.replace("\\", "\\\\").replace('"', '\\"')
        response.headers.append("Warning", f'299 - "{escaped}"')
    return response


async def api_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    response = json_response(exc.body(), exc.code)
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
