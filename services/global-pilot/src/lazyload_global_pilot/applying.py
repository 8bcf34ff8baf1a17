"""Kube adapter: keep the mesh-side objects (`meshside.render`) applied, and nothing else.

`MeshSideApplier.apply(desired)` (blocking: call it through `asyncio.to_thread`) validates every
object first (Istio ones against Istio's schema; nothing is written when one is invalid), then
creates what is missing, updates what differs (Services by merge patch of their ports only, so
the cluster IP, selector and labels stay - a Service a Helm chart made is adopted, never pruned;
EnvoyFilters by replace with the read `resourceVersion`, re-read
once on 409), and deletes the objects labelled `app.kubernetes.io/managed-by=lazyload-global-pilot`
that are no longer desired (a mode or namespace change). An object whose `lazyload.io/rendered`
annotation already holds the hash of the desired content is not written again.

The chart lets global-pilot write only in the namespaces of its current mode (Roles there; it
reads everywhere): a stale object in a namespace it may no longer write to is refused (403) -
logged with the `kubectl delete` to run and listed in `ApplyResult.denied`, never a failed apply.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from lazyload_common import kube

from lazyload_global_pilot import meshside
from lazyload_global_pilot.ports import PortSet

log = logging.getLogger(__name__)
RawObject = dict[str, Any]
HASH_ANNOTATION = "lazyload.io/rendered"
_COLLECTIONS = {
    ("v1", "Service"): "/api/v1/namespaces/{ns}/services",
    ("networking.istio.io/v1alpha3", "EnvoyFilter"): (
        "/apis/networking.istio.io/v1alpha3/namespaces/{ns}/envoyfilters"
    ),
    ("networking.istio.io/v1alpha3", "DestinationRule"): (
        "/apis/networking.istio.io/v1alpha3/namespaces/{ns}/destinationrules"
    ),
}
_MANAGED_LISTS = {
    "/api/v1/services": ("v1", "Service"),
    "/apis/networking.istio.io/v1alpha3/destinationrules": (
        "networking.istio.io/v1alpha3",
        "DestinationRule",
    ),
    "/apis/networking.istio.io/v1alpha3/envoyfilters": (
        "networking.istio.io/v1alpha3",
        "EnvoyFilter",
    ),
}


@dataclass
class ApplyResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    denied: list[str] = field(default_factory=list)
    """Stale objects this identity may not delete (RBAC: another mode's namespace)."""


def _key(obj: RawObject) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind')}/{meta.get('namespace')}/{meta.get('name')}"


def _path(obj: RawObject, *, item: bool = True) -> str:
    meta = obj["metadata"]
    collection = _COLLECTIONS[(obj["apiVersion"], obj["kind"])].format(ns=meta["namespace"])
    return f"{collection}/{meta['name']}" if item else collection


def content_hash(obj: RawObject) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


class MeshSideApplier:
    def __init__(self, api: kube.KubeApi) -> None:
        self.api = api

    def apply(self, desired: list[RawObject]) -> ApplyResult:
        for obj in desired:
            meshside.validate(obj)
        result = ApplyResult()
        for obj in desired:
            self._apply_one(obj, result)
        wanted = {_key(o) for o in desired}
        for path, (api_version, kind) in _MANAGED_LISTS.items():
            for current in self._managed(path):
                current.setdefault("kind", kind)
                current.setdefault("apiVersion", api_version)
                if _key(current) not in wanted:
                    self._prune(current, result)
        if result.created or result.updated or result.deleted:
            log.info(
                "mesh-side: created %s updated %s deleted %s",
                result.created,
                result.updated,
                result.deleted,
            )
        return result

    def applied_ports(self, options: meshside.MeshSideOptions) -> PortSet:
        """The wormhole ports the global-sidecar Service(s) of `options` have now (named
        `http-<P>` / `tcp-<P>` by `meshside.service`; other names count as HTTP)."""
        http: set[int] = set()
        tcp: set[int] = set()
        for obj in meshside.render(PortSet(http=(0,)), options):
            if obj["kind"] != "Service":
                continue
            try:
                current = self.api.get(_path(obj))
            except kube.KubeNotFound:
                continue
            for port in (current.get("spec") or {}).get("ports") or []:
                number = port.get("port")
                if isinstance(number, int) and number > 0:
                    name = str(port.get("name") or "")
                    (tcp if name.startswith("tcp-") else http).add(number)
        return PortSet(http=tuple(sorted(http - tcp)), tcp=tuple(sorted(tcp)))

    def _prune(self, obj: RawObject, result: ApplyResult) -> None:
        try:
            self.api.delete(_path(obj))
        except kube.KubeNotFound:
            return
        except kube.KubeDenied as e:
            meta = obj["metadata"]
            log.warning(
                "stale %s not deleted, not allowed there (%s): kubectl delete -n %s %s %s",
                _key(obj),
                e,
                meta["namespace"],
                obj["kind"].lower(),
                meta["name"],
            )
            result.denied.append(_key(obj))
            return
        result.deleted.append(_key(obj))

    def _managed(self, path: str) -> list[RawObject]:
        selector = f"{meshside.MANAGED_BY}={meshside.MANAGER}"
        try:
            return list(self.api.list(path, labelSelector=selector).get("items") or [])
        except kube.KubeNotFound:
            return []  # the kind is not served (no Istio CRDs): nothing of ours there

    def _apply_one(self, obj: RawObject, result: ApplyResult) -> None:
        digest = content_hash(obj)
        body = json.loads(json.dumps(obj))
        body["metadata"].setdefault("annotations", {})[HASH_ANNOTATION] = digest
        for attempt in (1, 2):
            try:
                current = self.api.get(_path(obj))
            except kube.KubeNotFound:
                self.api.create(_path(obj, item=False), body)
                result.created.append(_key(obj))
                return
            annotations = (current.get("metadata") or {}).get("annotations") or {}
            if annotations.get(HASH_ANNOTATION) == digest:
                result.unchanged.append(_key(obj))
                return
            try:
                self._update(obj, body, current)
            except kube.KubeConflict:
                if attempt == 2:
                    raise
                continue
            result.updated.append(_key(obj))
            return

    def _update(self, obj: RawObject, body: RawObject, current: RawObject) -> None:
        if obj["kind"] == "Service":
            # only the ports: a Service someone else made (a Helm chart) keeps its selector and
            # labels, and without our label it is never pruned
            patch = {
                "metadata": {"annotations": body["metadata"]["annotations"]},
                "spec": {"ports": body["spec"]["ports"]},
            }
            self.api.merge_patch(_path(obj), patch)
        else:
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            self.api.replace(_path(obj), body)
