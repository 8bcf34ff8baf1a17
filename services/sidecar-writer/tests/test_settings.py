"""Settings come from `LAZYLOAD_*` variables and are checked before anything connects.

Covers: defaults, the `sidecar` group from the environment (JSON or comma-separated extra hosts),
and `check()` naming every unusable field.
"""

from __future__ import annotations

import pytest
from lazyload_common import errors
from lazyload_sidecar_writer import consuming
from lazyload_sidecar_writer.settings import WriterSettings

from .conftest import make_settings


def test_defaults() -> None:
    settings = WriterSettings()
    assert settings.sidecar.api_version == "v1"
    assert settings.sidecar.host_mode == "any-namespace"
    assert settings.sidecar.extra_hosts == []
    assert settings.sidecar.fence_status and settings.sidecar.max_tracked_fences == 10000
    assert settings.mesh.istio_namespace == "istio-system"
    assert settings.sidecar.deny_namespaces == ["kube-system", "kube-public", "kube-node-lease"]
    assert settings.sidecar.allow_namespaces == []
    assert not settings.sidecar.manages("kube-system") and settings.sidecar.manages("default")
    assert consuming.consumer_spec(settings).max_deliver == settings.sidecar.max_deliver == 120
    settings.check()


def test_namespace_scope_is_checked() -> None:
    settings = make_settings(allow_namespaces=["kube-system", "Bad_NS"])
    with pytest.raises(errors.ConfigError) as caught:
        settings.check()
    assert "'Bad_NS'" in str(caught.value) and "both name 'kube-system'" in str(caught.value)


def test_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAZYLOAD_SIDECAR__API_VERSION", "v1beta1")
    monkeypatch.setenv("LAZYLOAD_SIDECAR__HOST_MODE", "own-namespace")
    monkeypatch.setenv("LAZYLOAD_SIDECAR__EXTRA_HOSTS", '["a.example.com", "ops/*"]')
    monkeypatch.setenv("LAZYLOAD_SIDECAR__REVISION", "canary")
    monkeypatch.setenv("LAZYLOAD_MESH__ISTIO_NAMESPACE", "istio")
    monkeypatch.setenv("LAZYLOAD_SIDECAR__FENCE_STATUS", "false")
    monkeypatch.setenv("LAZYLOAD_SIDECAR__MAX_TRACKED_FENCES", "500")
    settings = WriterSettings()
    assert not settings.sidecar.fence_status and settings.sidecar.max_tracked_fences == 500
    assert settings.sidecar.api_version == "v1beta1"
    assert settings.sidecar.host_mode == "own-namespace"
    assert settings.sidecar.extra_hosts == ["a.example.com", "ops/*"]
    assert settings.sidecar.revision == "canary"
    assert settings.mesh.istio_namespace == "istio"


def test_comma_separated_extra_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAZYLOAD_SIDECAR__EXTRA_HOSTS", "a.example.com, ops/*")
    assert WriterSettings().sidecar.extra_hosts == ["a.example.com", "ops/*"]
    assert make_settings(extra_hosts="x.example.com").sidecar.extra_hosts == ["x.example.com"]


def test_check_names_every_bad_field() -> None:
    settings = make_settings(extra_hosts=["*/*", "Bad Host", "ok.example.com"], sink="gitops")
    with pytest.raises(errors.ConfigError) as caught:
        settings.check()
    message = str(caught.value)
    assert "'*/*'" in message and "'Bad Host'" in message and "ok.example.com" not in message
    assert "sidecar.gitops_dir" in message
