"""Fault injection and the request log, plus the ASGI middleware that applies both."""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import json
import re
import threading
import time
from collections import deque
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .authz import user_from_authorization
from .errors import REASON_BY_CODE, status_body

ADMIN_PREFIX = "/emulator/"
Verb = Literal["GET", "POST", "PUT", "PATCH", "DELETE", "*"]


class FaultSpec(BaseModel):
    """Make the next `count` requests matching verb and path_regex fail with `status`.

    `count` None means every matching request until the faults are cleared. `delay` holds each
    matching request that many seconds before the failure is sent: an API server that times out
    (a client with a shorter timeout gives up first; the status is then never seen).
    """

    model_config = ConfigDict(populate_by_name=True)

    verb: Verb = "*"
    path_regex: str = ".*"
    status: int = Field(default=500, ge=400, le=599)
    count: int | None = Field(default=1, ge=1)
    reason: str | None = None
    message: str | None = None
    retry_after: int | None = Field(default=None, ge=0)
    delay: float = Field(default=0.0, ge=0.0, le=3600.0)

    @field_validator("verb", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("path_regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        re.compile(value)
        return value


class Fault(FaultSpec):
    id: int
    remaining: int | None
    hits: int = 0


class RequestRecord(BaseModel):
    """One served API request (admin requests are not recorded)."""

    verb: str
    path: str
    query: str
    status: int
    content_type: str
    fault: bool = False
    unchanged: bool = False
    """An update that changed nothing (no new resourceVersion): a duplicate write."""
    time: float
    # Who the bearer token names (see authz.py): the ServiceAccount token's user, the admin...
    user: str = ""


_CURRENT: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "emulator_request", default=None
)


def mark_unchanged() -> None:
    """Note on the request being served that its update changed nothing (the request log's
    `unchanged`)."""
    record = _CURRENT.get()
    if record is not None:
        record["unchanged"] = True


class FaultBook:
    """Armed faults; thread-safe because tests arm them from other threads."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def add(self, spec: FaultSpec) -> Fault:
        with self._lock:
            fault = Fault(**spec.model_dump(), id=next(self._ids), remaining=spec.count)
            self._faults.append(fault)
            return fault

    def list(self) -> list[Fault]:
        with self._lock:
            return [f.model_copy() for f in self._faults]

    def remove(self, fault_id: int) -> bool:
        with self._lock:
            before = len(self._faults)
            self._faults = [f for f in self._faults if f.id != fault_id]
            return len(self._faults) != before

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, verb: str, path: str) -> Fault | None:
        """The first armed fault matching the request, consuming one of its uses."""
        with self._lock:
            for fault in self._faults:
                if fault.verb in ("*", verb) and re.search(fault.path_regex, path):
                    fault.hits += 1
                    if fault.remaining is not None:
                        fault.remaining -= 1
                        if fault.remaining <= 0:
                            self._faults.remove(fault)
                    return fault.model_copy()
        return None


class RequestLog:
    """The most recent API requests, oldest first."""

    def __init__(self, size: int) -> None:
        self._records: deque[RequestRecord] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def list(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()


def fault_response(fault: Fault) -> tuple[int, dict[str, str], bytes]:
    reason = fault.reason or REASON_BY_CODE.get(fault.status, "InternalError")
    message = fault.message or f"fault injected by the Kubernetes API emulator ({reason})"
    retry_after = fault.retry_after
    if retry_after is None and fault.status == 429:
        retry_after = 1
    details = {"retryAfterSeconds": retry_after} if retry_after is not None else None
    body = json.dumps(status_body(fault.status, message, reason, details)).encode()
    headers = {"content-type": "application/json"}
    if retry_after is not None:
        headers["retry-after"] = str(retry_after)
    return fault.status, headers, body


class FaultAndLogMiddleware:
    """Fails requests matching an armed fault and records every API request's outcome."""

    def __init__(self, app: ASGIApp, faults: FaultBook, log: RequestLog) -> None:
        self.app = app
        self.faults = faults
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(ADMIN_PREFIX):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        record = {
            "verb": scope["method"],
            "path": scope["path"],
            "query": scope.get("query_string", b"").decode("latin-1"),
            "content_type": headers.get(b"content-type", b"").decode("latin-1"),
            "time": time.time(),
            "user": user_from_authorization(
                headers.get(b"authorization", b"").decode("latin-1")
            ).name,
        }
        fault = self.faults.take(scope["method"], scope["path"])
        if fault is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            await self._send_fault(fault, send)
            self.log.add(RequestRecord(**record, status=fault.status, fault=True))
            return

        async def logging_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.log.add(RequestRecord(**record, status=message["status"]))
            await send(message)

        token = _CURRENT.set(record)
        try:
            await self.app(scope, receive, logging_send)
        finally:
            _CURRENT.reset(token)

    @staticmethod
    async def _send_fault(fault: Fault, send: Send) -> None:
        status, headers, body = fault_response(fault)
        raw_headers = [(k.encode(), v.encode()) for k, v in headers.items()]
        raw_headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": body})
