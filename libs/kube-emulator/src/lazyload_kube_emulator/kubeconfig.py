"""Kubeconfig documents pointing clients (the official client, kubectl) at an emulator."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

CONTEXT = "lazyload-emulator"
TOKEN = "lazyload-emulator-token"


def kubeconfig_dict(url: str, namespace: str = "default") -> dict[str, Any]:
    """A kubeconfig with one cluster, one (dummy token) user and the `lazyload-emulator` context."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT, "cluster": {"server": url}}],
        "users": [{"name": CONTEXT, "user": {"token": TOKEN}}],
        "contexts": [
            {
                "name": CONTEXT,
                "context": {"cluster": CONTEXT, "user": CONTEXT, "namespace": namespace},
            }
        ],
        "current-context": CONTEXT,
        "preferences": {},
    }


def render(url: str) -> str:
    return yaml.safe_dump(kubeconfig_dict(url), sort_keys=False)


def write_kubeconfig(url: str, path: str | os.PathLike[str]) -> Path:
    """Write the kubeconfig atomically (readers never see a half-written file)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".kubeconfig-", dir=target.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(render(url))
    os.chmod(tmp, 0o600)
    os.replace(tmp, target)
    return target
