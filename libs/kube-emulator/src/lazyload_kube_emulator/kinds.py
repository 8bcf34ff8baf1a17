"""Per-kind behaviour of built-in resources: namespaces, services, pods, endpoints and CRDs."""

from __future__ import annotations

import copy
import ipaddress
from typing import TYPE_CHECKING, Any

from .errors import ApiError, invalid
from .registry import CRD_KEY, validate_crd

if TYPE_CHECKING:
    from .emulator import Emulator

Obj = dict[str, Any]
PROTECTED_NAMESPACES = ("default", "kube-system", "kube-public")


class KindHooks:
    """No-op hooks; subclasses adjust objects of one kind around writes."""

    def prepare_create(self, emu: Emulator, obj: Obj) -> None:
        """Mutate obj before it is validated and stored; raise ApiError to refuse."""

    def prepare_update(self, emu: Emulator, old: Obj, new: Obj) -> None:
        """Mutate new before an update is stored; raise ApiError to refuse."""

    def before_delete(self, emu: Emulator, obj: Obj) -> None:
        """Raise ApiError to refuse a delete."""

    def after_write(self, emu: Emulator, obj: Obj) -> None:
        """React to a stored create or update."""

    def after_delete(self, emu: Emulator, obj: Obj) -> None:
        """React to a removed object."""


class NamespaceHooks(KindHooks):
    def prepare_create(self, emu: Emulator, obj: Obj) -> None:
        name = obj["metadata"]["name"]
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        obj["status"] = {"phase": "Active"}

    def before_delete(self, emu: Emulator, obj: Obj) -> None:
        name = obj["metadata"]["name"]
        if name in PROTECTED_NAMESPACES:
            raise ApiError(
                403, f'namespaces "{name}" is forbidden: this namespace may not be deleted'
            )

    def after_delete(self, emu: Emulator, obj: Obj) -> None:
        namespace = obj["metadata"]["name"]
        for key in emu.store.resource_keys():
            emu.remove_matching(key, lambda o: o["metadata"].get("namespace") == namespace)


class ServiceHooks(KindHooks):
    def prepare_create(self, emu: Emulator, obj: Obj) -> None:
        spec = obj.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        for port in spec.get("ports") or []:
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")
                port.setdefault("targetPort", port.get("port"))
        if spec["type"] != "ExternalName":
            self._assign_ip(emu, obj, spec)
        obj["status"] = {"loadBalancer": {}}

    def _assign_ip(self, emu: Emulator, obj: Obj, spec: Obj) -> None:
        ip = spec.get("clusterIP") or (spec.get("clusterIPs") or [""])[0]
        if ip == "None":
            spec["clusterIPs"] = ["None"]
            spec["clusterIP"] = "None"
            return
        if not ip:
            ip = emu.ips.pick()
        elif not emu.ips.contains(ip) or emu.ips.is_used(ip):
            why = "not in the valid range" if not emu.ips.contains(ip) else "already allocated"
            cause = {
                "reason": "FieldValueInvalid",
                "field": "spec.clusterIPs",
                "message": f'Invalid value: ["{ip}"]: failed to allocate IP {ip}: '
                f"provided IP is {why}",
            }
            raise invalid("Service", "", obj["metadata"]["name"], [cause])
        spec["clusterIP"], spec["clusterIPs"] = ip, [ip]
        spec.setdefault("ipFamilies", ["IPv6" if ":" in ip else "IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")

    def prepare_update(self, emu: Emulator, old: Obj, new: Obj) -> None:
        old_spec, spec = old.get("spec", {}), new.setdefault("spec", {})
        for field in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
            if not spec.get(field) and field in old_spec:
                spec[field] = copy.deepcopy(old_spec[field])
        if spec.get("clusterIP") != old_spec.get("clusterIP"):
            cause = {
                "reason": "FieldValueInvalid",
                "field": "spec.clusterIPs[0]",
                "message": "Invalid value: field is immutable",
            }
            raise invalid("Service", "", new["metadata"]["name"], [cause])

    def after_write(self, emu: Emulator, obj: Obj) -> None:
        ip = obj.get("spec", {}).get("clusterIP")
        if ip and ip != "None":
            emu.ips.mark(ip)

    def after_delete(self, emu: Emulator, obj: Obj) -> None:
        ip = obj.get("spec", {}).get("clusterIP")
        if ip and ip != "None":
            emu.ips.release(ip)


def special_ip_reason(value: str) -> str | None:
    """Why a real API server refuses `value` as an endpoint address (its ValidateEndpointIP), or
    None when it takes it."""
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return "must be a valid IP address"
    if ip.is_unspecified:
        return f"may not be unspecified ({'::' if ip.version == 6 else '0.0.0.0'})"
    if ip.is_loopback:
        return "may not be in the loopback range (127.0.0.0/8, ::1/128)"
    if ip.is_link_local:
        return "may not be in the link-local range (169.254.0.0/16, fe80::/10)"
    if ip.is_multicast and ip in ipaddress.ip_network(
        "224.0.0.0/24" if ip.version == 4 else "ff02::/16"
    ):
        return "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"
    return None


class EndpointAddressHooks(KindHooks):
    """Endpoints and EndpointSlices: the addresses a real API server refuses are refused (422),
    unless the emulator runs with `allow_loopback_endpoints` (the demo's loopback pods)."""

    def __init__(self, kind: str, group: str, addresses: Any) -> None:
        self.kind, self.group, self.addresses = kind, group, addresses

    def prepare_create(self, emu: Emulator, obj: Obj) -> None:
        self._check(emu, obj)

    def prepare_update(self, emu: Emulator, old: Obj, new: Obj) -> None:
        self._check(emu, new)

    def _check(self, emu: Emulator, obj: Obj) -> None:
        if emu.config.allow_loopback_endpoints:
            return
        causes = [
            {
                "reason": "FieldValueInvalid",
                "field": field,
                "message": f'Invalid value: "{value}": {reason}',
            }
            for field, value in self.addresses(obj)
            if (reason := special_ip_reason(str(value))) is not None
        ]
        if causes:
            raise invalid(self.kind, self.group, obj["metadata"]["name"], causes)


def _endpoints_addresses(obj: Obj) -> Any:
    for i, subset in enumerate(obj.get("subsets") or []):
        for list_name in ("addresses", "notReadyAddresses"):
            for j, address in enumerate((subset or {}).get(list_name) or []):
                yield f"subsets[{i}].{list_name}[{j}].ip", (address or {}).get("ip", "")


def _slice_addresses(obj: Obj) -> Any:
    if obj.get("addressType") not in ("IPv4", "IPv6"):
        return
    for i, endpoint in enumerate(obj.get("endpoints") or []):
        for j, address in enumerate((endpoint or {}).get("addresses") or []):
            yield f"endpoints[{i}].addresses[{j}]", address


class PodHooks(KindHooks):
    def prepare_create(self, emu: Emulator, obj: Obj) -> None:
        obj["status"] = {"phase": "Pending"}


class CrdHooks(KindHooks):
    def prepare_create(self, emu: Emulator, obj: Obj) -> None:
        self._validate_and_default(emu, obj)
        obj["status"] = self._status(obj, [])

    def prepare_update(self, emu: Emulator, old: Obj, new: Obj) -> None:
        self._validate_and_default(emu, new)
        stored = (old.get("status") or {}).get("storedVersions") or []
        new["status"] = self._status(new, stored)

    def _validate_and_default(self, emu: Emulator, obj: Obj) -> None:
        causes = validate_crd(obj, emu.registry)
        if causes:
            raise invalid("CustomResourceDefinition", CRD_KEY[0], obj["metadata"]["name"], causes)
        names = obj["spec"]["names"]
        names.setdefault("singular", names["kind"].lower())
        names.setdefault("listKind", f"{names['kind']}List")
        for version in obj["spec"]["versions"]:
            version.setdefault("served", True)
            version.setdefault("storage", False)

    @staticmethod
    def _status(obj: Obj, stored: list[str]) -> Obj:
        storage = next(v["name"] for v in obj["spec"]["versions"] if v["storage"])
        conditions = [
            {"type": t, "status": "True", "reason": r, "message": m, "lastTransitionTime": ""}
            for t, r, m in (
                ("NamesAccepted", "NoConflicts", "no conflicts found"),
                ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
            )
        ]
        stamp = obj["metadata"].get("creationTimestamp", "")
        for condition in conditions:
            condition["lastTransitionTime"] = stamp
        return {
            "conditions": conditions,
            "acceptedNames": copy.deepcopy(obj["spec"]["names"]),
            "storedVersions": sorted({*stored, storage}),
        }

    def after_write(self, emu: Emulator, obj: Obj) -> None:
        emu.registry.install_crd(obj)

    def after_delete(self, emu: Emulator, obj: Obj) -> None:
        key = emu.registry.remove_crd(obj["metadata"]["name"])
        if key is not None:
            emu.remove_matching(key)


HOOKS: dict[tuple[str, str], KindHooks] = {
    ("", "namespaces"): NamespaceHooks(),
    ("", "services"): ServiceHooks(),
    ("", "pods"): PodHooks(),
    ("", "endpoints"): EndpointAddressHooks("Endpoints", "", _endpoints_addresses),
    ("discovery.k8s.io", "endpointslices"): EndpointAddressHooks(
        "EndpointSlice", "discovery.k8s.io", _slice_addresses
    ),
    CRD_KEY: CrdHooks(),
}
_DEFAULT = KindHooks()


def hooks_for(key: tuple[str, str]) -> KindHooks:
    return HOOKS.get(key, _DEFAULT)
