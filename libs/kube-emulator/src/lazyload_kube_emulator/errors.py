"""Kubernetes `Status` errors: the exception raised by handlers and the body it renders to."""

from __future__ import annotations

from typing import Any

REASON_BY_CODE = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Gone",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def status_body(
    code: int,
    message: str,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A `kind: Status` failure object as the real API server sends it."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason if reason is not None else REASON_BY_CODE.get(code, "Unknown"),
        "code": code,
    }
    if details:
        body["details"] = details
    return body


def success_status(details: dict[str, Any]) -> dict[str, Any]:
    """A `kind: Status` success object (what a delete of most kinds returns)."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    }


class ApiError(Exception):
    """An API failure that renders to a `Status` body with an HTTP status code."""

    def __init__(
        self,
        code: int,
        message: str,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.details = details
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return status_body(self.code, self.message, self.reason, self.details)


def _details(name: str | None, group: str, kind: str) -> dict[str, Any]:
    details: dict[str, Any] = {"kind": kind}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    return details


def _qualified(resource: str, group: str) -> str:
    return f"{resource}.{group}" if group else resource


def _object_error(
    code: int, reason: str, resource: str, group: str, name: str, state: str
) -> ApiError:
    """The API server's error about one object: `<resource>.<group> "<name>" <state>`."""
    message = f'{_qualified(resource, group)} "{name}" {state}'
    return ApiError(code, message, reason, _details(name, group, resource))


def not_found(resource: str, group: str, name: str) -> ApiError:
    return _object_error(404, "NotFound", resource, group, name, "not found")


def no_such_route() -> ApiError:
    return ApiError(404, "the server could not find the requested resource", "NotFound")


def already_exists(resource: str, group: str, name: str) -> ApiError:
    return _object_error(409, "AlreadyExists", resource, group, name, "already exists")


def conflict(resource: str, group: str, name: str, why: str | None = None) -> ApiError:
    why = why or (
        "the object has been modified; please apply your changes to the latest version and try again"
    )
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {_qualified(resource, group)} "{name}": {why}',
        "Conflict",
        _details(name, group, resource),
    )


def invalid(kind: str, group: str, name: str, causes: list[dict[str, str]]) -> ApiError:
    listed = ", ".join(f"{c['field']}: {c['message']}" for c in causes)
    qualified_kind = _qualified(kind, group)
    return ApiError(
        422,
        f'{qualified_kind} "{name}" is invalid: [{listed}]',
        "Invalid",
        {**_details(name, group, kind), "causes": causes},
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, message, "BadRequest")


def method_not_allowed(verb: str) -> ApiError:
    return ApiError(
        405, f"the server does not allow this method on the requested resource ({verb})"
    )


def unsupported_media_type(content_type: str, accepted: list[str]) -> ApiError:
    return ApiError(
        415,
        f"the body of the request was in an unknown format ({content_type}) - "
        f"accepted media types include: {', '.join(accepted)}",
        "UnsupportedMediaType",
    )


def gone(message: str) -> ApiError:
    return ApiError(410, message, "Gone")
