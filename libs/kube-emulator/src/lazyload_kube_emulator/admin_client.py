"""A small synchronous client of the emulator's admin API (faults, request log, reset)."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from .faults import FaultSpec, RequestRecord, Verb


class AdminClient:
    """Calls `/emulator/v1/...` on the emulator at base_url (stdlib HTTP, no extra deps)."""

    def __init__(self, base_url: str) -> None:
        self.url = base_url.rstrip("/")

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.url}/emulator/v1/{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def inject_fault(
        self,
        verb: Verb = "*",
        path_regex: str = ".*",
        status: int = 500,
        count: int | None = 1,
        reason: str | None = None,
        retry_after: int | None = None,
        message: str | None = None,
        delay: float = 0.0,
    ) -> dict[str, Any]:
        """Make the next `count` matching requests fail (count None: until cleared), each after
        `delay` seconds (an API server timing out)."""
        spec = FaultSpec(
            verb=verb,
            path_regex=path_regex,
            status=status,
            count=count,
            reason=reason,
            retry_after=retry_after,
            message=message,
            delay=delay,
        )
        return self._call("POST", "faults", spec.model_dump())

    def faults(self) -> list[dict[str, Any]]:
        return self._call("GET", "faults")

    def clear_faults(self) -> None:
        self._call("DELETE", "faults")

    def requests(self) -> list[RequestRecord]:
        """Recent API requests, oldest first (admin calls are not recorded)."""
        return [RequestRecord(**r) for r in self._call("GET", "requests")]

    def clear_requests(self) -> None:
        self._call("DELETE", "requests")

    def expire_watches(self) -> int:
        """End every open watch with a 410 Gone `ERROR` event and forget the change history, as
        when the API server's watch cache drops the watchers that fell behind: each client must
        list again. The number of watches ended."""
        return int(self._call("POST", "watches/expire")["expired"])

    def reset(self) -> None:
        """Back to the start state: default namespaces and startup CRDs, no faults, empty log."""
        self._call("POST", "reset")
