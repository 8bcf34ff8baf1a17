# pyright: reportAttributeAccessIssue=false, reportArgumentType=false
# The message classes are built at run time from descriptors.binpb (no generated module, so no
# stubs): their fields, and the upb descriptors, are unknown to the type checker.
"""Kubernetes protobuf messages <-> the JSON objects the emulator stores.

The message classes come from `descriptors.binpb` (upstream `generated.proto`, compiled by
protoc); `fields.json` adds what the Go types say about JSON (see the generator,
`scripts/generate_kube_proto.py`). The conversion follows the API server: a Go client encodes
every non-pointer field, zero or not, and the JSON form drops the zero ones whose tag says
`omitempty`, so a decoded object is the one the same client would have sent as JSON.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

from . import special
from .errors import ProtobufError

MEDIA_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"
META_PACKAGE = "k8s.io.apimachinery.pkg.apis.meta.v1"
UNKNOWN = "k8s.io.apimachinery.pkg.runtime.Unknown"
WATCH_EVENT = f"{META_PACKAGE}.WatchEvent"
# Go types with a MarshalJSON of their own that are never a field of an object: the envelope.
ENVELOPES = {UNKNOWN}
_BYTES = FieldDescriptor.TYPE_BYTES
_FLOATS = (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT)
_STRING = FieldDescriptor.TYPE_STRING
_BOOL = FieldDescriptor.TYPE_BOOL
_MESSAGE = FieldDescriptor.TYPE_MESSAGE


@dataclass(frozen=True)
class Rule:
    """How one proto field appears in JSON (from the Go field's type and tag)."""

    json: str
    pointer: bool = False  # *T: present on the wire only when set, zero or not
    omitempty: bool = True  # a zero scalar, empty list or empty map is left out
    omitzero: bool = False  # a zero struct is left out
    inline: bool = False  # the message's fields sit in the parent's JSON object
    skip: bool = False  # json:"-"

    @classmethod
    def parse(cls, name: str, row: list[str] | None) -> Rule:
        if row is None:
            return cls(name)
        json_name, flags = row
        return cls(
            json_name,
            pointer="p" in flags,
            omitempty="r" not in flags,
            omitzero="z" in flags,
            inline="i" in flags,
            skip="-" in flags,
        )


class Codec:
    """Decodes and encodes Kubernetes protobuf with one descriptor pool."""

    def __init__(self, descriptors: bytes, table: dict[str, Any]) -> None:
        self.pool = descriptor_pool.DescriptorPool()
        for proto_file in descriptor_pb2.FileDescriptorSet.FromString(descriptors).file:
            self.pool.Add(proto_file)
        self.packages: dict[str, str] = table["groups"]  # "rbac.authorization.k8s.io/v1" -> pkg
        self.lists: set[str] = set(table["lists"])
        self.custom_json: set[str] = set(table["custom_json"])
        self._rows: dict[str, dict[str, list[str]]] = table["fields"]
        self._rules: dict[str, dict[str, Rule]] = {}

    # -- lookups

    def message_class(self, full_name: str) -> type[Message]:
        return message_factory.GetMessageClass(self.pool.FindMessageTypeByName(full_name))

    def kind_message(self, api_version: str, kind: str) -> Descriptor | None:
        """The message of a kind at a group version; meta kinds (Status, DeleteOptions,
        WatchEvent...) are part of every group version, as in the API server's scheme."""
        package = self.packages.get(api_version)
        if package is None or not kind:
            return None
        for candidate in (package, META_PACKAGE):
            try:
                return self.pool.FindMessageTypeByName(f"{candidate}.{kind}")
            except KeyError:
                continue
        return None

    def serves(self, api_version: str) -> bool:
        return api_version in self.packages

    def _rules_of(self, descriptor: Descriptor) -> dict[str, Rule]:
        rules = self._rules.get(descriptor.full_name)
        if rules is None:
            rows = self._rows.get(descriptor.full_name, {})
            rules = {f.name: Rule.parse(f.name, rows.get(f.name)) for f in descriptor.fields}
            self._rules[descriptor.full_name] = rules
        return rules

    # -- protobuf -> JSON

    def decode(self, raw: bytes) -> dict[str, Any]:
        """A JSON object from `k8s\\x00` + `runtime.Unknown` (what a client sends)."""
        if not raw.startswith(MAGIC):
            raise ProtobufError("the protobuf body does not start with the prefix k8s\\x00")
        try:
            unknown = self.message_class(UNKNOWN).FromString(raw[len(MAGIC) :])
        except DecodeError as exc:
            raise ProtobufError(f"the protobuf envelope could not be decoded: {exc}") from exc
        meta = unknown.typeMeta
        if unknown.contentEncoding or unknown.contentType not in ("", MEDIA_TYPE):
            raise ProtobufError(
                f"unsupported protobuf envelope content {unknown.contentType!r} "
                f"(encoding {unknown.contentEncoding!r})"
            )
        descriptor = self.kind_message(meta.apiVersion, meta.kind)
        if descriptor is None:
            raise ProtobufError(
                f'no kind "{meta.kind}" is registered for version "{meta.apiVersion}"'
            )
        try:
            message = message_factory.GetMessageClass(descriptor).FromString(unknown.raw)
        except DecodeError as exc:
            raise ProtobufError(f"the {meta.kind} could not be decoded: {exc}") from exc
        body = self.to_json(message)
        return {"kind": meta.kind, "apiVersion": meta.apiVersion, **body}

    def to_json(self, message: Message) -> Any:
        """The JSON value of a message, as Go's encoding/json writes the Go struct."""
        name = message.DESCRIPTOR.full_name
        if name in special.CONVERTERS:
            return special.CONVERTERS[name].to_json(self, message)
        if name in self.lists:
            return list(message.items)  # a Go slice type (Verbs): a JSON list
        out: dict[str, Any] = {}
        for field, rule in self._fields(message):
            if rule.inline:
                out.update(self.to_json(getattr(message, field.name)))
                continue
            self._field_to_json(message, field, rule, out)
        return out

    def _fields(self, message: Message) -> Iterator[tuple[Any, Rule]]:
        """The message's fields (descriptors: the pure-Python or the upb class) with their
        rules, but those Go's JSON never sees (`skip`)."""
        rules = self._rules_of(message.DESCRIPTOR)
        for field in message.DESCRIPTOR.fields:
            rule = rules[field.name]
            if not rule.skip:
                yield field, rule

    def _field_to_json(
        self, message: Message, field: FieldDescriptor, rule: Rule, out: dict[str, Any]
    ) -> None:
        value = getattr(message, field.name)
        if field.is_repeated:
            if not value:  # a Go client never writes an empty list or map: nil
                if not rule.omitempty:
                    out[rule.json] = None
                return
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                value_field = field.message_type.fields_by_name["value"]
                out[rule.json] = {k: self._value(value_field, v) for k, v in value.items()}
            else:
                out[rule.json] = [self._value(field, v) for v in value]
            return
        if rule.pointer:  # on the wire exactly when the Go pointer is set
            if message.HasField(field.name):
                out[rule.json] = self._value(field, value)
            elif not rule.omitempty:
                out[rule.json] = None
            return
        if field.type == _MESSAGE:  # a Go struct: omitempty never leaves one out
            if rule.omitzero and self.is_zero(value):
                return
            out[rule.json] = self.to_json(value)
            return
        if (rule.omitempty or rule.omitzero) and not value:
            return
        out[rule.json] = self._value(field, value)

    def _value(self, field: FieldDescriptor, value: Any) -> Any:
        if field.type == _MESSAGE:
            return self.to_json(value)
        if field.type == _BYTES:
            return base64.b64encode(value).decode()
        if field.type in _FLOATS and math.isfinite(value) and value == int(value):
            return int(value)  # Go writes float64(5) as 5
        return value

    def is_zero(self, message: Message) -> bool:
        """Whether the Go value the message decodes to is its type's zero value (omitzero)."""
        name = message.DESCRIPTOR.full_name
        if name in special.CONVERTERS:
            return special.CONVERTERS[name].is_zero(self, message)
        for field, value in message.ListFields():
            if field.is_repeated:
                if value:
                    return False
            elif field.type == _MESSAGE:
                if self._rules_of(message.DESCRIPTOR)[field.name].pointer or not self.is_zero(
                    value
                ):
                    return False
            elif value or self._rules_of(message.DESCRIPTOR)[field.name].pointer:
                return False
        return True

    # -- JSON -> protobuf

    def encode(self, obj: dict[str, Any]) -> bytes:
        """`k8s\\x00` + `runtime.Unknown` holding obj (what the API server answers)."""
        api_version, kind = obj.get("apiVersion") or "", obj.get("kind") or ""
        descriptor = self.kind_message(api_version, kind)
        if descriptor is None:
            raise ProtobufError(f'no kind "{kind}" is registered for version "{api_version}"')
        message = message_factory.GetMessageClass(descriptor)()
        self.fill(message, obj)
        unknown = self.message_class(UNKNOWN)()
        unknown.typeMeta.apiVersion, unknown.typeMeta.kind = api_version, kind
        unknown.raw = message.SerializeToString(deterministic=True)
        unknown.contentEncoding = unknown.contentType = ""
        return MAGIC + unknown.SerializeToString(deterministic=True)

    def watch_frame(self, event_type: str, obj: dict[str, Any]) -> bytes:
        """One frame of a protobuf watch: a 4-byte big-endian length, then a `WatchEvent`
        whose object is encoded like a response body."""
        event = self.message_class(WATCH_EVENT)()
        event.type = event_type
        event.object.raw = self.encode(obj)
        data = event.SerializeToString(deterministic=True)
        return len(data).to_bytes(4, "big") + data

    def fill(self, message: Message, value: Any) -> None:
        """Set message from its JSON value (fields JSON does not know are left unset)."""
        name = message.DESCRIPTOR.full_name
        if name in special.CONVERTERS:
            special.CONVERTERS[name].fill(self, message, value)
            return
        if name in self.lists:
            message.items.extend(value or [])
            return
        if not isinstance(value, dict):
            raise ProtobufError(f"{name}: expected a JSON object, not {type(value).__name__}")
        for field, rule in self._fields(message):
            if rule.inline:
                self.fill(getattr(message, field.name), value)
                continue
            item = value.get(rule.json)
            if item is None:
                continue
            try:
                self._fill_field(message, field, item)
            except ProtobufError:
                raise
            except (TypeError, ValueError, AttributeError) as exc:
                raise ProtobufError(f"{name}.{field.name}: {exc}") from exc

    def _fill_field(self, message: Message, field: FieldDescriptor, value: Any) -> None:
        target = getattr(message, field.name)
        if field.is_repeated and field.message_type and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            for key, item in value.items():
                if value_field.type == _MESSAGE:
                    self.fill(target[key], item)
                else:
                    target[key] = self._scalar(value_field, item)
        elif field.is_repeated:
            for item in value:
                if field.type == _MESSAGE:
                    self.fill(target.add(), item)
                else:
                    target.append(self._scalar(field, item))
        elif field.type == _MESSAGE:
            target.SetInParent()
            self.fill(target, value)
        else:
            setattr(message, field.name, self._scalar(field, value))

    @staticmethod
    def _scalar(field: FieldDescriptor, value: Any) -> Any:
        if field.type == _BYTES:
            return base64.b64decode(value)
        if field.type == _STRING and not isinstance(value, str):
            raise ProtobufError(f"{field.name}: expected a string, not {json.dumps(value)}")
        if field.type == _BOOL and not isinstance(value, bool):
            raise ProtobufError(f"{field.name}: expected a boolean, not {json.dumps(value)}")
        if field.type not in (*_FLOATS, _STRING, _BOOL) and isinstance(value, float):
            if value != int(value):
                raise ProtobufError(f"{field.name}: expected an integer, not {value}")
            return int(value)
        return value


@cache
def codec() -> Codec:
    """The codec of the packaged schema (loaded on first use)."""
    here = resources.files(__package__)
    descriptors = here.joinpath("descriptors.binpb").read_bytes()
    table = json.loads(here.joinpath("fields.json").read_text())
    return Codec(descriptors, table)
