"""Settings groups shared by the services (pydantic-settings, `LAZYLOAD_` prefix, `__` nesting).

A service declares its own `BaseSettings` subclass with `model_config = service_config()` and
composes these groups, so `LAZYLOAD_NATS__URL` or `LAZYLOAD_ADMIN__PORT` mean the same everywhere.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict


def service_config() -> SettingsConfigDict:
    """The settings config every service uses: `LAZYLOAD_` prefix, nested groups with `__`."""
    return SettingsConfigDict(
        env_prefix="LAZYLOAD_", env_nested_delimiter="__", extra="ignore", validate_default=True
    )


class NatsSettings(BaseModel):
    """Where NATS JetStream is."""

    url: str = Field("nats://127.0.0.1:4222", description="NATS server URL(s), comma-separated.")
    name: str = Field("", description="Client connection name (defaults to the service name).")
    user: str = Field("", description="User name, when the server requires one.")
    password: str = Field("", description="Password for `user`.")
    token: str = Field("", description="Auth token, when the server requires one.")
    stream_replicas: int = Field(
        1, ge=1, le=5, description="Replicas of streams this service creates."
    )
    connect_timeout: float = Field(
        5.0, gt=0, description="Seconds to wait for each connect attempt."
    )


class KubeSettings(BaseModel):
    """How to reach the Kubernetes API (a real cluster or the local emulator, always by kubeconfig)."""

    kubeconfig: Path | None = Field(
        None,
        description="Path of a kubeconfig; unset means in-cluster config, then ~/.kube/config.",
    )
    context: str | None = Field(None, description="Context of the kubeconfig to use.")
    qps: float = Field(50.0, gt=0, description="Client-side rate limit of writes, requests/second.")
    burst: int = Field(100, ge=1, description="Client-side rate limit burst.")


class AdminSettings(BaseModel):
    """The admin HTTP endpoint: /healthz, /readyz, /metrics and service APIs."""

    host: str = Field("0.0.0.0", description="Address the admin server binds.")
    port: int = Field(8080, ge=0, le=65535, description="Admin port; 0 picks a free port.")


class MeshSettings(BaseModel):
    """Facts about the mesh that several services need to agree on."""

    cluster_domain: str = Field("cluster.local", description="Kubernetes cluster DNS domain.")
    istio_namespace: str = Field("istio-system", description="Namespace of istiod.")
    global_sidecar_namespace: str = Field(
        "mesh-operator",
        description="Namespace of the global-sidecar and lazyload (Slime's default).",
    )
