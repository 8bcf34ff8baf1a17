"""Content types: decoding request bodies (JSON, YAML, protobuf) and choosing the answer's.

Built-in kinds take and give `application/vnd.kubernetes.protobuf`, as in the API server;
custom resources never do (415 for a protobuf body, 406 for a client that accepts only
protobuf). The emulator answers JSON whenever the client accepts anything besides protobuf
(kubectl sends `Accept: application/vnd.kubernetes.protobuf,application/json`), and protobuf,
`Status` errors included, when that is all it accepts. Conversions such as `;as=Table` are
JSON only.
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from starlette.requests import Request

from .errors import ApiError, bad_request, unsupported_media_type
from .kubeproto import MEDIA_TYPE as PROTOBUF
from .kubeproto import ProtobufError, codec
from .resources import ResourceInfo

JSON = "application/json"
YAML = "application/yaml"


def media_type(header: str | None) -> str:
    """`application/json; charset=utf-8` -> `application/json`."""
    return (header or "").split(";", 1)[0].strip().lower()


def _ranges(accept: str | None) -> list[tuple[str, dict[str, str]]]:
    ranges = []
    for part in (accept or "").split(","):
        kind, *params = (p.strip() for p in part.split(";"))
        if kind:
            pairs = (p.partition("=") for p in params)
            ranges.append((kind.lower(), {k.strip(): v.strip() for k, _, v in pairs}))
    return ranges


def accepts_only_protobuf(accept: str | None) -> bool:
    """Whether the client takes plain protobuf and nothing else: then its answers, errors
    included, are protobuf (as the API server encodes them)."""
    ranges = _ranges(accept)
    return bool(ranges) and all(kind == PROTOBUF and "as" not in params for kind, params in ranges)


def check_acceptable(accept: str | None, info: ResourceInfo) -> None:
    """406 when the client accepts only protobuf and the resource has none (custom resources),
    or only a protobuf conversion (`;as=Table`) that the emulator serves as JSON only."""
    ranges = _ranges(accept)
    if not ranges or any(kind != PROTOBUF for kind, _ in ranges):
        return
    if info.builtin and accepts_only_protobuf(accept):
        return
    accepted = [JSON, YAML, PROTOBUF] if info.builtin else [JSON, YAML]
    raise ApiError(
        406,
        f"only the following media types are accepted: {', '.join(accepted)}",
        "NotAcceptable",
    )


def decode_body(raw: bytes, content_type: str | None, info: ResourceInfo) -> Any:
    """The object a create/replace/delete body holds (415 for a type the resource lacks)."""
    kind = media_type(content_type) or JSON
    if kind == PROTOBUF and info.builtin:
        try:
            return codec().decode(raw)
        except ProtobufError as exc:
            raise bad_request(
                f"the object provided is unrecognized (must be of type {info.kind}): {exc}"
            ) from exc
    if "json" not in kind and "yaml" not in kind:
        accepted = [JSON, YAML, PROTOBUF] if info.builtin else [JSON, YAML]
        raise unsupported_media_type(content_type or "", accepted)
    try:
        if "yaml" in kind:
            return yaml.safe_load(raw)
        return json.loads(raw or b"null")
    except (ValueError, yaml.YAMLError) as exc:
        raise bad_request(f"the request body could not be decoded: {exc}") from exc


def request_protobuf(request: Request) -> bool:
    """Whether the dispatcher chose protobuf for this request's answers (errors included)."""
    return bool(getattr(request.state, "protobuf", False))
