"""The ServiceFence as the domain sees it: plain frozen values read from the wire in one place.

`Fence.from_raw` is the only function that reads ServiceFence JSON (Slime's fields and lazyload's
own status fields); `desiring` computes on these values and writes status JSON back. Nothing here
does I/O. Slime writes a domain's status as an int (0 ACTIVE, 1 EXPIRE, 2 EXPIREWAIT) or a name,
and times as RFC 3339 or unix seconds: the readers accept both.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import msgpack
from lazyload_common import events

GROUP = "microservice.slime.io"
VERSION = "v1alpha1"
KIND = "ServiceFence"
PLURAL = "servicefences"
API_VERSION = f"{GROUP}/{VERSION}"
CREATED_BY_LABEL = "app.kubernetes.io/created-by"
REVISION_LABEL = "istio.io/rev"
CREATED_BY_VALUE = "fence-controller"
TOMBSTONE_ANNOTATION = "lazyload.io/fence-deleted"
"""Earlier versions' tombstone on a Service (its manual fence was deleted), value
`<RFC 3339 time>;serviceFenced=<label>`: only read now, once, to move it into the tombstones'
ConfigMap (`tombstoning.Tombstones.migrate`)."""

RawObject = dict[str, Any]
Selector = dict[str, str]

_METRIC_KEY = re.compile(r'^\{(destination_service|request_host)="([^"]*)"\}\Z')


class DomainStatus(enum.StrEnum):
    """Slime's `Destinations.status`; ACTIVE and EXPIREWAIT domains are rendered, EXPIRE not."""

    ACTIVE = "ACTIVE"
    EXPIRE = "EXPIRE"
    EXPIREWAIT = "EXPIREWAIT"

    @classmethod
    def parse(cls, value: object) -> DomainStatus:
        """Read Slime's int or name; anything unknown or absent counts as ACTIVE (Slime omits it)."""
        if isinstance(value, int) and not isinstance(value, bool):
            return _BY_NUMBER.get(value, cls.ACTIVE)
        if isinstance(value, str):
            if value.isdigit():
                return _BY_NUMBER.get(int(value), cls.ACTIVE)
            return cls.__members__.get(value.upper(), cls.ACTIVE)
        return cls.ACTIVE

    @property
    def rendered(self) -> bool:
        return self is not DomainStatus.EXPIRE


_BY_NUMBER = {0: DomainStatus.ACTIVE, 1: DomainStatus.EXPIRE, 2: DomainStatus.EXPIREWAIT}


def metric_key(host: str) -> str:
    """Slime's `metricStatus` key of a learned host."""
    return f'{{destination_service="{host}"}}'


def host_of_metric_key(key: str) -> str | None:
    """The host of a `metricStatus` key (`destination_service` or `request_host`), else None."""
    match = _METRIC_KEY.match(key)
    return match.group(2) if match and match.group(2) else None


def parse_time(value: object) -> float | None:
    """Unix seconds from RFC 3339 text or a number; None when absent, unreadable or impossible
    (before 1970, after year 9999, not finite: `format_time` could not write it back)."""
    seconds = _seconds(value)
    return seconds if seconds is not None and events.is_valid_time(seconds) else None


def _seconds(value: object) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(text)
        except ValueError:
            pass
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    return None


def format_time(unix: float) -> str:
    """RFC 3339 in UTC, to the second (what lazyload writes)."""
    return datetime.fromtimestamp(int(unix), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _timestamp(raw: object) -> float | None:
    """Seconds of Slime's `Timestamp` `{seconds, nanos}`."""
    if not isinstance(raw, Mapping):
        return None
    seconds = parse_time(raw.get("seconds", 0))
    nanos = parse_time(raw.get("nanos", 0)) or 0.0
    return None if seconds is None else seconds + nanos / 1e9


@dataclass(frozen=True)
class Strategy:
    """The RecyclingStrategy of one `spec.host` entry: stable, deadline, auto, or none (= stable)."""

    kind: str = "stable"
    expire: float | None = None
    duration: float | None = None
    recently_called: float | None = None

    @classmethod
    def from_raw(cls, raw: object) -> Strategy:
        if not isinstance(raw, Mapping):
            return cls()
        if isinstance(raw.get("deadline"), Mapping):
            return cls("deadline", expire=_timestamp(raw["deadline"].get("expire")))
        if isinstance(raw.get("auto"), Mapping):
            return cls(
                "auto",
                duration=_timestamp(raw["auto"].get("duration")),
                recently_called=_timestamp(raw.get("RecentlyCalled")),
            )
        return cls()

    def changes_at(self) -> float | None:
        """When `status_at` turns EXPIRE (None: never); a status check at that instant still
        says ACTIVE, so callers look just after it."""
        if self.kind == "deadline":
            return self.expire
        if self.kind == "auto" and self.duration is not None and self.recently_called is not None:
            return self.recently_called + self.duration
        return None

    def status_at(self, now: float) -> DomainStatus:
        if self.kind == "deadline" and self.expire is not None and now > self.expire:
            return DomainStatus.EXPIRE
        if (
            self.kind == "auto"
            and self.duration is not None
            and self.recently_called is not None
            and now - self.recently_called > self.duration
        ):
            return DomainStatus.EXPIRE
        return DomainStatus.ACTIVE


@dataclass(frozen=True)
class Learned:
    """A host learned from traffic (`status.learned[host]`)."""

    host: str
    first_seen: float
    last_seen: float
    port: int | None = None
    reasons: tuple[str, ...] = ("learned",)

    def to_raw(self) -> RawObject:
        raw: RawObject = {
            "firstSeen": format_time(self.first_seen),
            "lastSeen": format_time(self.last_seen),
            "reasons": list(self.reasons),
        }
        if self.port is not None:
            raw["port"] = self.port
        return raw

    @classmethod
    def from_raw(cls, host: str, raw: object, *, default_time: float) -> Learned:
        raw = raw if isinstance(raw, Mapping) else {}
        first = parse_time(raw.get("firstSeen"))
        last = parse_time(raw.get("lastSeen"))
        port = raw.get("port")
        reasons = raw.get("reasons")
        return cls(
            host=host,
            first_seen=first if first is not None else (last or default_time),
            last_seen=last if last is not None else (first or default_time),
            port=port if isinstance(port, int) and not isinstance(port, bool) else None,
            reasons=tuple(str(r) for r in reasons) if isinstance(reasons, list) else ("learned",),
        )


@dataclass(frozen=True)
class Domain:
    """One entry of `status.domains`: the hosts it renders and its recycling state."""

    hosts: tuple[str, ...]
    status: DomainStatus = DomainStatus.ACTIVE


@dataclass(frozen=True)
class Fence:
    """A ServiceFence: identity, spec, and the status last written."""

    namespace: str
    name: str
    uid: str = ""
    resource_version: str = ""
    generation: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    enable: bool = False
    spec_hosts: Mapping[str, Strategy] = field(default_factory=dict)
    workload_labels: Selector | None = None
    from_service: bool = False
    label_selectors: tuple[Selector, ...] = ()
    raw_status: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def created_by_controller(self) -> bool:
        return self.labels.get(CREATED_BY_LABEL) == CREATED_BY_VALUE

    @property
    def revision(self) -> int:
        value = self.raw_status.get("revision")
        return value if isinstance(value, int) and value >= 0 else 0

    @property
    def metric_status(self) -> dict[str, str]:
        raw = self.raw_status.get("metricStatus")
        return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, Mapping) else {}

    @property
    def domains(self) -> dict[str, Domain]:
        raw = self.raw_status.get("domains")
        if not isinstance(raw, Mapping):
            return {}
        out: dict[str, Domain] = {}
        for key, entry in raw.items():
            entry = entry if isinstance(entry, Mapping) else {}
            hosts = entry.get("hosts")
            out[str(key)] = Domain(
                tuple(str(h) for h in hosts) if isinstance(hosts, list) else (),
                DomainStatus.parse(entry.get("status")),
            )
        return out

    def learned(self, *, default_time: float) -> dict[str, Learned]:
        raw = self.raw_status.get("learned")
        if not isinstance(raw, Mapping):
            return {}
        return {
            str(h): Learned.from_raw(str(h), v, default_time=default_time) for h, v in raw.items()
        }

    @property
    def recorded_enabled(self) -> bool | None:
        value = self.raw_status.get("enabled")
        return value if isinstance(value, bool) else None

    @property
    def recorded_selector(self) -> Selector | None:
        value = self.raw_status.get("workloadSelector")
        return {str(k): str(v) for k, v in value.items()} if isinstance(value, Mapping) else None

    @classmethod
    def from_raw(cls, obj: Mapping[str, Any]) -> Fence:
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        workload = spec.get("workloadSelector") or {}
        labels = workload.get("labels")
        raw_hosts = spec.get("host") or {}
        selectors = spec.get("labelSelector") or []
        return cls(
            namespace=str(meta.get("namespace", "")),
            name=str(meta.get("name", "")),
            uid=str(meta.get("uid", "")),
            resource_version=str(meta.get("resourceVersion", "")),
            generation=int(meta.get("generation") or 0),
            labels=dict(meta.get("labels") or {}),
            enable=bool(spec.get("enable", False)),
            spec_hosts={str(k): Strategy.from_raw(v) for k, v in raw_hosts.items()},
            workload_labels=dict(labels) if isinstance(labels, Mapping) and labels else None,
            from_service=bool(workload.get("fromService", False)),
            label_selectors=tuple(
                dict(s.get("selector") or {}) for s in selectors if isinstance(s, Mapping)
            ),
            raw_status=status_of(obj),
        )


class PackedStatus(bytes):
    """A fence's `status`, msgpack-packed: how the watch store keeps it (less than half the
    memory of the parsed status; unpacked only when the fence is computed)."""


def pack_status(obj: Mapping[str, Any]) -> dict[str, Any]:
    """`obj` with its status packed (the fence reflector's transform)."""
    status = obj.get("status")
    if not isinstance(status, Mapping) or not status:
        return dict(obj)
    return {**obj, "status": PackedStatus(cast(bytes, msgpack.packb(status)))}


def status_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The status of a raw fence, packed or not (a fresh dict)."""
    status = obj.get("status")
    if isinstance(status, PackedStatus):
        return dict(msgpack.unpackb(status))
    return dict(status or {})


def tombstone_value(at: float, fenced_label: str) -> str:
    return f"{format_time(at)};serviceFenced={fenced_label}"


def tombstone_label(value: str) -> str:
    """The `slime.io/serviceFenced` value the Service had when its manual fence was deleted."""
    _, _, label = value.partition(";serviceFenced=")
    return label


def new_fence_body(
    namespace: str, name: str, workload_labels: Selector | None = None, *, istio_rev: str = ""
) -> RawObject:
    """The ServiceFence lazyload creates for a Service (Slime's auto-fence shape), or for a
    workload without one (its pods' labels as the workload selector); labelled with the Istio
    revision it belongs to, when there is one."""
    selector: RawObject = (
        {"labels": dict(workload_labels)} if workload_labels else {"fromService": True}
    )
    labels = {CREATED_BY_LABEL: CREATED_BY_VALUE}
    if istio_rev:
        labels[REVISION_LABEL] = istio_rev
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"namespace": namespace, "name": name, "labels": labels},
        "spec": {"enable": True, "workloadSelector": selector},
    }


def revision_in_scope(labels: Mapping[str, str], istio_rev: str, *, strict: bool) -> bool:
    """Whether a fence labelled `labels` belongs to the reconciler of revision `istio_rev`
    (Slime's RevInScope): strictly, its `istio.io/rev` must equal it (both empty included);
    otherwise a fence without the label belongs to every revision."""
    rev = labels.get(REVISION_LABEL, "")
    if strict:
        return rev == istio_rev
    return not rev or rev == istio_rev
