"""The ASGI application of the Kubernetes API emulator."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from . import discovery, handlers
from .admin import router as admin_router
from .config import EmulatorConfig
from .emulator import Emulator
from .errors import ApiError
from .faults import FaultAndLogMiddleware
from .responses import api_error_handler, http_error_handler, unexpected_error_handler

ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


def _routes(app: FastAPI) -> None:
    get = ["GET"]
    app.add_api_route("/version", discovery.version, methods=get, include_in_schema=False)
    for path in ("/healthz", "/readyz", "/livez"):
        app.add_api_route(path, discovery.health, methods=get, include_in_schema=False)
    app.add_route("/openapi/v2", discovery.openapi_v2, methods=get)
    app.add_route("/api", discovery.core_versions, methods=get)
    app.add_route("/api/v1", discovery.core_resources, methods=get)
    app.add_route("/api/v1/{rest:path}", handlers.core_endpoint, methods=ALL_METHODS)
    app.add_route("/apis", discovery.group_list, methods=get)
    app.add_route("/apis/{group}", discovery.group, methods=get)
    app.add_route("/apis/{group}/{version}", discovery.group_version, methods=get)
    app.add_route(
        "/apis/{group}/{version}/{rest:path}", handlers.group_endpoint, methods=ALL_METHODS
    )


class StripTrailingSlash:
    """Serve `/api/v1/` like `/api/v1` (the official client asks for `/api/`, `/version/`...)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and len(path) > 1 and path.endswith("/"):
            scope = {**scope, "path": path.rstrip("/") or "/"}
        await self.app(scope, receive, send)


def create_app(emulator: Emulator | None = None, config: EmulatorConfig | None = None) -> FastAPI:
    """A FastAPI app serving the Kubernetes REST shape over one `Emulator`'s state."""
    emulator = emulator or Emulator(config)
    app = FastAPI(
        title="lazyload Kubernetes API emulator",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.emulator = emulator
    app.router.redirect_slashes = False
    _routes(app)
    app.include_router(admin_router)
    app.add_exception_handler(ApiError, api_error_handler)
    app.add_exception_handler(HTTPException, http_error_handler)
    app.add_exception_handler(Exception, unexpected_error_handler)
    app.add_middleware(StripTrailingSlash)
    app.add_middleware(FaultAndLogMiddleware, faults=emulator.faults, log=emulator.requests)
    return app
