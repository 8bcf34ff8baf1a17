"""Settings of one Kubernetes API emulator instance."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import BaseModel, Field, field_validator

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "istio-system")


class EmulatorConfig(BaseModel):
    """Everything that shapes the emulator's behaviour (not where it listens)."""

    service_cidr: str = "10.96.0.0/12"
    history_size: int = Field(default=10_000, ge=1)
    request_log_size: int = Field(default=10_000, ge=1)
    bookmark_interval: float = Field(default=5.0, gt=0)
    namespaces: tuple[str, ...] = DEFAULT_NAMESPACES
    crd_dirs: tuple[Path, ...] = ()
    server_version: str = "v1.37.0"
    # RBAC authorization of resource requests by the stored Roles/bindings (see authz.py).
    authorize: bool = False
    # Accept loopback/link-local addresses in Endpoints and EndpointSlices, which a real API
    # server refuses: only for the demo, whose pods are loopback servers on a machine without root.
    allow_loopback_endpoints: bool = False

    @field_validator("service_cidr")
    @classmethod
    def _valid_cidr(cls, value: str) -> str:
        ipaddress.ip_network(value)
        return value
