"""What the reconciler knows of the cluster: Reflectors over ServiceFences, Services, Namespaces.

The stores are read-only caches (a write may be newer than them: `applying` handles the 409);
changes are handed to callbacks in the event loop. Nothing here writes to the API.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from lazyload_common import kube

from lazyload_fence_reconciler import fences, policies

FENCES_PATH = f"/apis/{fences.GROUP}/{fences.VERSION}/{fences.PLURAL}"
SERVICES_PATH = "/api/v1/services"
NAMESPACES_PATH = "/api/v1/namespaces"
Key = tuple[str, str]
OnChange = Callable[[str, kube.RawObject], None]


class Cluster:
    """Three reflectors and typed reads of their stores."""

    def __init__(
        self,
        api: kube.KubeApi,
        loop: asyncio.AbstractEventLoop,
        *,
        on_fence: OnChange,
        on_service: OnChange,
        on_namespace: OnChange | None = None,
        watch_timeout: int = 60,
    ) -> None:
        def reflector(path: str, on_change: OnChange, name: str) -> kube.Reflector:
            return kube.Reflector(
                api, path, on_change=on_change, loop=loop, watch_timeout=watch_timeout, name=name
            )

        self.fences = reflector(FENCES_PATH, on_fence, "servicefences")
        self.services = reflector(SERVICES_PATH, on_service, "services")
        self.namespaces = reflector(NAMESPACES_PATH, on_namespace or _ignore, "namespaces")
        self._all = (self.fences, self.services, self.namespaces)

    def start(self) -> None:
        for reflector in self._all:
            reflector.start()

    def stop(self) -> None:
        for reflector in self._all:
            reflector.stop()

    async def wait_synced(self) -> None:
        for reflector in self._all:
            await reflector.synced.wait()

    def synced(self) -> bool:
        return all(r.synced.is_set() for r in self._all)

    # The stores are replaced or updated by the reflector threads: read them through copies.

    def fence(self, key: Key) -> kube.RawObject | None:
        return self.fences.store.get(key)

    def fence_keys(self, namespace: str | None = None) -> list[Key]:
        return sorted(k for k in self.fences.store.copy() if namespace is None or k[0] == namespace)

    def service_keys(self, namespace: str | None = None) -> list[Key]:
        keys = self.services.store.copy()
        return sorted(k for k in keys if namespace is None or k[0] == namespace)

    def all_fences(self) -> list[kube.RawObject]:
        store = self.fences.store.copy()
        return [store[k] for k in sorted(store)]

    def service(self, key: Key) -> policies.ServiceFacts | None:
        obj = self.services.store.get(key)
        if obj is None:
            return None
        labels = obj.get("metadata", {}).get("labels") or {}
        selector = obj.get("spec", {}).get("selector") or {}
        return policies.ServiceFacts(labels=dict(labels), selector=dict(selector))

    def selector(self, key: Key) -> dict[str, str] | None:
        service = self.service(key)
        return dict(service.selector) if service and service.selector else None

    def namespace_labels(self, namespace: str) -> Mapping[str, str]:
        obj = self.namespaces.store.get(("", namespace))
        return dict((obj or {}).get("metadata", {}).get("labels") or {})


def _ignore(kind: str, obj: kube.RawObject) -> None:
    del kind, obj
