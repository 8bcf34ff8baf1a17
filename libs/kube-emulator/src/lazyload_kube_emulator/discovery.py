"""Discovery (`/api`, `/apis`, group and version documents), `/version`, OpenAPI and health.

Aggregated discovery is not implemented: clients that ask for it get the plain documents
with `Content-Type: application/json` and fall back to per-group-version discovery, as they
do against older API servers.
"""

from __future__ import annotations

import platform
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from .emulator import Emulator
from .errors import no_such_route
from .responses import json_response

OPENAPI_V2_PROTOBUF = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
TITLE = "lazyload Kubernetes API emulator"


def _emulator(request: Request) -> Emulator:
    return request.app.state.emulator


def _group_document(group: str, versions: list[str]) -> dict[str, Any]:
    entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": entries, "preferredVersion": entries[0]}


def _resource_list(emu: Emulator, group: str, version: str) -> dict[str, Any]:
    resources = [
        entry
        for info in sorted(emu.registry.in_group_version(group, version), key=lambda i: i.plural)
        for entry in info.discovery_entries()
    ]
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }


async def core_versions(request: Request) -> Response:
    address = f"{request.url.hostname}:{request.url.port}"
    return json_response(
        {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
        }
    )


async def core_resources(request: Request) -> Response:
    return json_response(_resource_list(_emulator(request), "", "v1"))


async def group_list(request: Request) -> Response:
    groups = _emulator(request).registry.groups()
    documents = [_group_document(g, vs) for g, vs in groups.items() if g]
    return json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": documents})


async def group(request: Request) -> Response:
    name = request.path_params["group"]
    versions = _emulator(request).registry.groups().get(name)
    if not name or not versions:
        raise no_such_route()
    return json_response(
        {"kind": "APIGroup", "apiVersion": "v1", **_group_document(name, versions)}
    )


async def group_version(request: Request) -> Response:
    name, version = request.path_params["group"], request.path_params["version"]
    emu = _emulator(request)
    if version not in emu.registry.groups().get(name, []):
        raise no_such_route()
    return json_response(_resource_list(emu, name, version))


async def version(request: Request) -> Response:
    git_version = _emulator(request).config.server_version
    major, minor = git_version.lstrip("v").split(".")[:2]
    return json_response(
        {
            "major": major,
            "minor": minor,
            "gitVersion": git_version,
            "gitCommit": "lazyload-kube-emulator",
            "gitTreeState": "clean",
            "buildDate": "2025-01-01T00:00:00Z",
            "goVersion": "none (Python emulator)",
            "compiler": "cpython",
            "platform": f"{platform.system().lower()}/{platform.machine()}",
        }
    )


def _proto_string(field: int, text: str) -> bytes:
    data = text.encode()
    return bytes([field << 3 | 2, len(data)]) + data


def openapi_v2_protobuf() -> bytes:
    """A minimal gnostic `openapi_v2.Document` (swagger, info) with no paths or definitions.

    kubectl downloads it before `apply` for client-side validation; an empty document makes
    it skip schema checks and use its built-in types for strategic merge patches.
    """
    info = _proto_string(1, TITLE) + _proto_string(2, "v2")
    return _proto_string(1, "2.0") + bytes([2 << 3 | 2, len(info)]) + info


async def openapi_v2(request: Request) -> Response:
    if "protobuf" in request.headers.get("accept", ""):
        return Response(openapi_v2_protobuf(), media_type=OPENAPI_V2_PROTOBUF)
    document = {"swagger": "2.0", "info": {"title": TITLE, "version": "v2"}, "paths": {}}
    return json_response({**document, "definitions": {}})


async def health(request: Request) -> Response:
    return PlainTextResponse("ok")
