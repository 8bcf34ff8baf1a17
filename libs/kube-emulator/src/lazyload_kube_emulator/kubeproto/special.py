# pyright: reportAttributeAccessIssue=false, reportArgumentType=false
# The message classes are built at run time from descriptors.binpb (no generated module, so no
# stubs): their fields, and the upb descriptors, are unknown to the type checker.
"""The messages whose Go types write their own JSON (a `MarshalJSON` method).

Each converter mirrors the Go type: `metav1.Time` is an RFC 3339 string in seconds (null when
zero), `MicroTime` the same in microseconds, `Duration` Go's duration string, `Quantity` its
string, `IntOrString` a number or a string, `RawExtension`/`JSON`/`FieldsV1` the embedded JSON
document, and the `JSONSchemaPropsOr*` unions of a CRD schema a schema, a list or a bool.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from .errors import ProtobufError

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from .codec import Codec

META = "k8s.io.apimachinery.pkg.apis.meta.v1"
EXTENSIONS = "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAGIC = b"k8s\x00"


class Converter(Protocol):
    def to_json(self, codec: Codec, message: Message) -> Any: ...

    def fill(self, codec: Codec, message: Message, value: Any) -> None: ...

    def is_zero(self, codec: Codec, message: Message) -> bool: ...


def _error(message: str) -> ProtobufError:
    return ProtobufError(message)


def _parse_time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise _error(f"a time must be an RFC 3339 string, not {json.dumps(value)}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise _error(f"invalid RFC 3339 time {value!r}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class _Base:
    def is_zero(self, codec: Codec, message: Message) -> bool:
        return not message.ListFields()


class Time(_Base):
    """`metav1.Time`: seconds only (the API server drops nanos, as its JSON has none)."""

    layout = "%Y-%m-%dT%H:%M:%SZ"

    def to_json(self, codec: Codec, message: Message) -> Any:
        if not message.ListFields():  # Go writes a zero time as an empty message
            return None
        return self._format(message.seconds, 0)

    def _format(self, seconds: int, nanos: int) -> str:
        try:
            moment = EPOCH + timedelta(seconds=seconds, microseconds=nanos // 1000)
        except OverflowError as exc:
            raise _error(f"time out of range: {seconds}s") from exc
        return moment.strftime(self.layout)

    def fill(self, codec: Codec, message: Message, value: Any) -> None:
        moment = _parse_time(value)
        message.seconds = int((moment - EPOCH) // timedelta(seconds=1))


class MicroTime(Time):
    """`metav1.MicroTime` (Lease renewTime, Event eventTime): microseconds."""

    layout = "%Y-%m-%dT%H:%M:%S.%fZ"

    def to_json(self, codec: Codec, message: Message) -> Any:
        if not message.ListFields():
            return None
        return self._format(message.seconds, message.nanos)

    def fill(self, codec: Codec, message: Message, value: Any) -> None:
        since = _parse_time(value) - EPOCH
        message.seconds = int(since // timedelta(seconds=1))
        message.nanos = (since % timedelta(seconds=1)).microseconds * 1000


_UNITS = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6}
_UNITS.update({"s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9})
_DURATION = re.compile(r"(\d*\.?\d+)(ns|us|µs|μs|ms|s|m|h)")


def _decimal(value: int, unit: int) -> str:
    whole, fraction = divmod(value, unit)
    if not fraction:
        return str(whole)
    digits = str(fraction).rjust(len(str(unit)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}"


def go_duration(nanoseconds: int) -> str:
    """Go's `time.Duration.String()`: 1h0m0s, 1m30s, 1.5s, 300ms, 2µs, 0s."""
    if nanoseconds == 0:
        return "0s"
    sign, left = ("-" if nanoseconds < 0 else ""), abs(nanoseconds)
    if left < 10**9:
        name, size = next((n, s) for n, s in (("ms", 10**6), ("µs", 10**3), ("ns", 1)) if left >= s)
        return sign + _decimal(left, size) + name
    hours, left = divmod(left, 3600 * 10**9)
    minutes, left = divmod(left, 60 * 10**9)
    prefix = f"{hours}h{minutes}m" if hours else (f"{minutes}m" if minutes else "")
    return sign + prefix + _decimal(left, 10**9) + "s"


def parse_go_duration(text: str) -> int:
    sign = -1 if text.startswith("-") else 1
    body = text.lstrip("+-")
    if body == "0":
        return 0
    parts = _DURATION.findall(body)
    if not parts or "".join(n + u for n, u in parts) != body:
        raise _error(f"invalid duration {text!r}")
    return sign * round(sum(float(n) * _UNITS[u] for n, u in parts))


class Duration(_Base):
    def to_json(self, codec: Codec, message: Message) -> Any:
        return go_duration(message.duration)

    def fill(self, codec: Codec, message: Message, value: Any) -> None:
        if not isinstance(value, str):
            raise _error(f"a duration must be a string, not {json.dumps(value)}")
        message.duration = parse_go_duration(value)


class Quantity(_Base):
    """`resource.Quantity` (and `QuantityValue`): its canonical string, as the client sent it."""

    def to_json(self, codec: Codec, message: Message) -> Any:
        return message.string

    def fill(self, codec: Codec, message: Message, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise _error(f"a quantity must be a string or a number, not {json.dumps(value)}")
        if isinstance(value, float) and value == int(value):
            value = int(value)
        message.string = str(value)


class IntOrString(_Base):
    """`intstr.IntOrString`: type 0 is intVal, type 1 is strVal."""

    def to_json(self, codec: Codec, message: Message) -> Any:
        return message.strVal if message.type == 1 else message.intVal

    def fill(self, codec: Codec, message: Message, value: Any) -> None:
        if isinstance(value, str):
            message.type, message.strVal = 1, value
        elif isinstance(value, int) and not isinstance(value, bool):
            message.type, message.intVal = 0, value
        else:
            raise _error(f"expected an integer or a string, not {json.dumps(value)}")


class RawJSON(_Base):
    """A bytes field that holds a JSON document (`RawExtension.raw`, `apiextensions.JSON.raw`,
    `FieldsV1.Raw`)."""

    @staticmethod
    def _field(message: Message) -> str:
        return message.DESCRIPTOR.fields[0].name

    def to_json(self, codec: Codec, message: Message) -> Any:
        raw = getattr(message, self._field(message))
        if not raw:
            return None
        if raw.startswith(_MAGIC):  # a protobuf client may embed an object as protobuf
            return codec.decode(raw)
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise _error(f"embedded document is not JSON: {exc}") from exc

    def fill(self, codec: Codec, message: Message, value: Any) -> None:
        setattr(message, self._field(message), json.dumps(value, separators=(",", ":")).encode())


class SchemaOrArray(_Base):
    """`JSONSchemaPropsOrArray` (`items`): a list of schemas or one schema."""

    def to_json(self, codec: Codec, message: Message) -> Any:
        if message.jSONSchemas:
            return [codec.to_json(s) for s in message.jSONSchemas]
        return codec.to_json(message.schema) if message.HasField("schema") else None

    def fill(self, codec: Codec, message: Message, value: Any) -> None:
        if isinstance(value, list):
            for schema in value:
                codec.fill(message.jSONSchemas.add(), schema)
        else:
            codec.fill(message.schema, value)


class SchemaOrBool(_Base):
    """`JSONSchemaPropsOrBool` (`additionalProperties`): a schema (allows) or a bool."""

    def to_json(self, codec: Codec, message: Message) -> Any:
        if message.HasField("schema"):
            return codec.to_json(message.schema)
        return bool(message.allows)

    def fill(self, codec: Codec, message: Message, value: Any) -> None:
        if isinstance(value, bool):
            message.allows = value
        else:
            message.allows = True
            codec.fill(message.schema, value)


class SchemaOrStringArray(_Base):
    """`JSONSchemaPropsOrStringArray` (`dependencies`): a list of names or a schema."""

    def to_json(self, codec: Codec, message: Message) -> Any:
        if message.property:
            return list(message.property)
        return codec.to_json(message.schema) if message.HasField("schema") else None

    def fill(self, codec: Codec, message: Message, value: Any) -> None:
        if isinstance(value, list):
            message.property.extend(value)
        else:
            codec.fill(message.schema, value)


class GroupVersion(_Base):
    def to_json(self, codec: Codec, message: Message) -> Any:
        return f"{message.group}/{message.version}" if message.group else message.version

    def fill(self, codec: Codec, message: Message, value: Any) -> None:
        group, _, version = str(value).rpartition("/")
        message.group, message.version = group, version


CONVERTERS: dict[str, Converter] = {
    f"{META}.Time": Time(),
    f"{META}.MicroTime": MicroTime(),
    f"{META}.Duration": Duration(),
    f"{META}.FieldsV1": RawJSON(),
    f"{META}.GroupVersion": GroupVersion(),
    "k8s.io.apimachinery.pkg.api.resource.Quantity": Quantity(),
    "k8s.io.apimachinery.pkg.api.resource.QuantityValue": Quantity(),
    "k8s.io.apimachinery.pkg.util.intstr.IntOrString": IntOrString(),
    "k8s.io.apimachinery.pkg.runtime.RawExtension": RawJSON(),
    f"{EXTENSIONS}.JSON": RawJSON(),
    f"{EXTENSIONS}.JSONSchemaPropsOrArray": SchemaOrArray(),
    f"{EXTENSIONS}.JSONSchemaPropsOrBool": SchemaOrBool(),
    f"{EXTENSIONS}.JSONSchemaPropsOrStringArray": SchemaOrStringArray(),
}
