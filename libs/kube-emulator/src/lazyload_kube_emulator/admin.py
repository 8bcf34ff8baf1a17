"""The emulator's own admin API under `/emulator/v1` (a prefix the Kubernetes API never uses).

- `POST /emulator/v1/faults` arms a `FaultSpec`; `GET` lists armed faults; `DELETE` clears them
  (`DELETE /emulator/v1/faults/{id}` removes one).
- `GET /emulator/v1/requests` lists recent API requests; `DELETE` empties the log.
- `POST /emulator/v1/watches/expire` ends every open watch with a 410 Gone `ERROR` event and
  forgets the change history (a resume from an older resourceVersion is 410 too): as when the API
  server's watch cache drops watchers, every client has to list again.
- `POST /emulator/v1/reset` restores the start state (namespaces and startup CRDs only).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from .emulator import Emulator
from .errors import ApiError
from .faults import Fault, FaultSpec, RequestRecord

router = APIRouter(prefix="/emulator/v1")


def _emulator(request: Request) -> Emulator:
    return request.app.state.emulator


@router.post("/faults", status_code=201)
async def add_fault(spec: FaultSpec, request: Request) -> Fault:
    return _emulator(request).faults.add(spec)


@router.get("/faults")
async def list_faults(request: Request) -> list[Fault]:
    return _emulator(request).faults.list()


@router.delete("/faults", status_code=204)
async def clear_faults(request: Request) -> Response:
    _emulator(request).faults.clear()
    return Response(status_code=204)


@router.delete("/faults/{fault_id}", status_code=204)
async def remove_fault(fault_id: int, request: Request) -> Response:
    if not _emulator(request).faults.remove(fault_id):
        raise ApiError(404, f"no fault with id {fault_id}")
    return Response(status_code=204)


@router.get("/requests")
async def list_requests(request: Request) -> list[RequestRecord]:
    return _emulator(request).requests.list()


@router.delete("/requests", status_code=204)
async def clear_requests(request: Request) -> Response:
    _emulator(request).requests.clear()
    return Response(status_code=204)


@router.post("/watches/expire")
async def expire_watches(request: Request) -> dict[str, int]:
    store = _emulator(request).store
    return {"expired": store.events.expire_all(store.resource_version)}


@router.post("/reset", status_code=204)
async def reset(request: Request) -> Response:
    _emulator(request).reset()
    return Response(status_code=204)
