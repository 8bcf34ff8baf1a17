"""The write verbs (create, replace, patch, delete) with the API server's object rules."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import objects, schema
from .copying import clone
from .errors import ApiError, already_exists, bad_request, conflict, invalid, not_found
from .faults import mark_unchanged
from .kinds import hooks_for
from .patching import apply_patch
from .paths import Target

if TYPE_CHECKING:
    from .emulator import Emulator

Obj = dict[str, Any]


@dataclass
class WriteOptions:
    """Query options of a write: `dryRun=All` and `fieldValidation`."""

    dry_run: bool = False
    field_validation: str = ""
    warnings: list[str] = field(default_factory=list)


def get_or_404(emu: Emulator, target: Target) -> Obj:
    info = target.info
    obj = emu.store.get(info.key, target.ns, target.name or "")
    if obj is None:
        raise not_found(info.plural, info.group, target.name or "")
    return obj


def _check_namespace(emu: Emulator, target: Target, meta: Obj) -> None:
    if not target.info.namespaced:
        meta.pop("namespace", None)
        return
    if meta.get("namespace", target.ns) != target.ns:
        raise bad_request(
            "the namespace of the provided object does not match the namespace sent on the request"
        )
    meta["namespace"] = target.ns
    if not emu.store.exists(("", "namespaces"), "", target.ns):
        raise not_found("namespaces", "", target.ns)


def _choose_name(emu: Emulator, target: Target, meta: Obj) -> str:
    if meta.get("name"):
        return meta["name"]
    prefix = meta.get("generateName")
    if not prefix:
        cause = {
            "reason": "FieldValueRequired",
            "field": "metadata.name",
            "message": "Required value: name or generateName is required",
        }
        raise invalid(target.info.kind, target.info.group, "", [cause])
    for _ in range(10):
        name = objects.generated_name(prefix)
        if not emu.store.exists(target.info.key, target.ns, name):
            return name
    raise ApiError(409, f"could not generate a unique name from {prefix!r}", "AlreadyExists")


def _schema_check(target: Target, obj: Obj, opts: WriteOptions) -> Obj:
    """Prune unknown fields and validate a custom resource against its served schema."""
    info = target.info
    if info.builtin:
        return obj
    version_schema = info.schemas.get(target.version) or {}
    pruned, dropped = schema.prune(version_schema, obj)
    if dropped and opts.field_validation == "Strict":
        listed = ", ".join(f'unknown field "{d}"' for d in dropped)
        raise bad_request(f"strict decoding error: {listed}")
    if opts.field_validation != "Ignore":
        opts.warnings.extend(f'unknown field "{d}"' for d in dropped)
    causes = schema.validate(version_schema, pruned)
    if causes:
        raise invalid(info.kind, info.group, obj["metadata"].get("name", ""), causes)
    return pruned


def create(emu: Emulator, target: Target, body: Any, opts: WriteOptions) -> Obj:
    info = target.info
    obj = objects.check_identity(info, body, target.version)
    meta = obj["metadata"]
    _check_namespace(emu, target, meta)
    meta["name"] = _choose_name(emu, Target(info, target.version, target.namespace), meta)
    objects.check_name(info, meta["name"])
    objects.init_metadata(obj)
    if info.status_subresource:
        obj.pop("status", None)
    hooks_for(info.key).prepare_create(emu, obj)
    obj = _schema_check(target, obj, opts)
    if emu.store.exists(info.key, target.ns, meta["name"]):
        raise already_exists(info.plural, info.group, meta["name"])
    obj["apiVersion"] = info.api_version(info.stored_version)
    if opts.dry_run:
        return objects.with_version(info, target.version, obj)
    stored = emu.store.put(info.key, obj)
    hooks_for(info.key).after_write(emu, stored)
    return objects.with_version(info, target.version, stored)


def _check_identity_matches(target: Target, new: Obj, old: Obj) -> None:
    meta = new["metadata"]
    if meta.get("name", target.name) != target.name:
        raise bad_request(
            f"the name of the object ({meta.get('name')}) does not match the name on the URL "
            f"({target.name})"
        )
    if target.info.namespaced and meta.get("namespace", target.ns) != target.ns:
        raise bad_request("the namespace of the provided object does not match the URL")
    rv = meta.get("resourceVersion")
    if rv and rv != old["metadata"]["resourceVersion"]:
        raise conflict(target.info.plural, target.info.group, target.name or "")


def replace(emu: Emulator, target: Target, body: Any, opts: WriteOptions) -> Obj:
    old = get_or_404(emu, target)
    new = objects.check_identity(target.info, body, target.version)
    _check_identity_matches(target, new, old)
    return _update(emu, target, old, new, opts)


def patch(emu: Emulator, target: Target, raw: bytes, content_type: str, opts: WriteOptions) -> Obj:
    old = get_or_404(emu, target)
    current = objects.with_version(target.info, target.version, old)
    patched = apply_patch(target.info, current, raw, content_type)
    new = objects.check_identity(target.info, patched, target.version)
    _check_identity_matches(target, new, old)
    return _update(emu, target, old, new, opts)


def _merge_update(target: Target, old: Obj, new: Obj, emu: Emulator) -> Obj:
    info = target.info
    if target.subresource == "status":
        return objects.only_status_from(old, new)
    objects.carry_system_metadata(old, new)
    if info.status_subresource:
        objects.keep_status_of(old, new)
    hooks_for(info.key).prepare_update(emu, old, new)
    objects.bump_generation(info, old, new)
    return new


def _update(emu: Emulator, target: Target, old: Obj, new: Obj, opts: WriteOptions) -> Obj:
    info = target.info
    result = _merge_update(target, old, new, emu)
    result = _schema_check(target, result, opts)
    result["apiVersion"] = old["apiVersion"]
    meta = result["metadata"]
    if meta.get("deletionTimestamp") and not meta.get("finalizers") and not opts.dry_run:
        gone = emu.remove(info.key, target.ns, target.name or "")
        return objects.with_version(info, target.version, gone or result)
    if objects.same_object(old, result) or opts.dry_run:
        if not opts.dry_run:
            mark_unchanged()
        return objects.with_version(info, target.version, result)
    stored = emu.store.put(info.key, result)
    hooks_for(info.key).after_write(emu, stored)
    return objects.with_version(info, target.version, stored)


def _check_preconditions(target: Target, old: Obj, options: Obj) -> None:
    preconditions = options.get("preconditions") or {}
    meta = old["metadata"]
    for field_name in ("uid", "resourceVersion"):
        wanted = preconditions.get(field_name)
        if wanted and wanted != meta.get(field_name):
            why = f"Precondition failed: {field_name} in precondition: {wanted}, "
            why += f"{field_name} in object meta: {meta.get(field_name)}"
            raise conflict(target.info.plural, target.info.group, target.name or "", why)


def delete(emu: Emulator, target: Target, options: Obj, opts: WriteOptions) -> tuple[Obj, bool]:
    """Delete one object; returns (the object as last seen, whether it is gone now)."""
    info = target.info
    old = get_or_404(emu, target)
    _check_preconditions(target, old, options)
    hooks_for(info.key).before_delete(emu, old)
    meta = old["metadata"]
    if opts.dry_run or meta.get("deletionTimestamp"):
        return objects.with_version(info, target.version, old), False
    if meta.get("finalizers"):
        pending = clone(old)
        pending["metadata"]["deletionTimestamp"] = objects.now()
        pending["metadata"]["deletionGracePeriodSeconds"] = 0
        stored = emu.store.put(info.key, pending)
        return objects.with_version(info, target.version, stored), False
    orphan = options.get("propagationPolicy") == "Orphan" or options.get("orphanDependents")
    gone = emu.remove(info.key, target.ns, target.name or "", orphan=bool(orphan)) or old
    return objects.with_version(info, target.version, gone), True
