"""Settings from the environment: a misspelt `LAZYLOAD_*` variable is an error at start-up.

pydantic-settings ignores a variable that names no field, so a typo in a TLS variable would
silently leave a port in plaintext. `from_environment` refuses it with one line naming it; a
setting of another lazyload service (a shared environment) and the tools' own variables pass.
"""

from __future__ import annotations

import pytest
from lazyload_common import errors, settings
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings


class TlsGroup(BaseModel):
    tls_cert_file: str = ""
    port: int = 8082
    labels: dict[str, str] = Field(default_factory=dict)


class Service(BaseSettings):
    model_config = settings.service_config()

    nats: settings.NatsSettings = Field(default_factory=settings.NatsSettings)
    grpc: TlsGroup = Field(default_factory=TlsGroup)
    log_level: str = "INFO"


@pytest.mark.parametrize(
    ("variable", "hint"),
    [
        ("LAZYLOAD_GRPC__TLS_CERT_FLE", "LAZYLOAD_GRPC__TLS_CERT_FILE"),
        ("LAZYLOAD_GRCP__TLS_CERT_FILE", "LAZYLOAD_GRPC__TLS_CERT_FILE"),
        ("LAZYLOAD_GRPC_TLS_CERT_FILE", "LAZYLOAD_GRPC__TLS_CERT_FILE"),
        ("lazyload_nats__urll", "LAZYLOAD_NATS__URL"),
        ("LAZYLOAD_LOG_LEVEL__X", "LAZYLOAD_LOG_LEVEL"),
        ("LAZYLOAD_GRPC__PORT__X", "LAZYLOAD_GRPC__PORT"),
        ("LAZYLOAD_GRPC__", "LAZYLOAD_GRPC"),
        ("LAZYLOAD_NONSENSE", ""),
    ],
)
def test_a_misspelt_variable_is_named(variable: str, hint: str) -> None:
    [problem] = settings.unknown_variables(Service, {variable: "x", "LAZYLOAD_NATS__URL": "n"})
    assert problem.startswith(f"unknown setting {variable}")
    assert (f"did you mean {hint}?" in problem) if hint else "did you mean" not in problem


@pytest.mark.parametrize(
    "variable",
    [
        "LAZYLOAD_GRPC__TLS_CERT_FILE",
        "lazyload_grpc__port",
        "LAZYLOAD_GRPC",  # a whole group as JSON
        "LAZYLOAD_GRPC__LABELS__TEAM",  # one key of a mapping
        "LAZYLOAD_LOG_LEVEL",
        "LAZYLOAD_FENCE__ALLOW_NAMESPACES",  # another service's group, in a shared environment
        "LAZYLOAD_XDS__PORT",
        "LAZYLOAD_REPORTER",
        "LAZYLOAD_ENVOY_BIN",  # the tools' own
        "LAZYLOAD_UP_NATS_PORT",
        "LAZYLOAD_TEST_KUBE",
        "PATH",
        "KUBECONFIG",
    ],
)
def test_known_variables_pass(variable: str) -> None:
    assert settings.unknown_variables(Service, {variable: "1"}) == []


def test_from_environment_refuses_with_one_line() -> None:
    environ = {"LAZYLOAD_GRPC__TLS_CERT_FLE": "/tls/cert.pem", "LAZYLOAD_NATS__URLS": "x"}
    with pytest.raises(errors.ConfigError) as caught:
        settings.from_environment(Service, environ)
    message = str(caught.value)
    assert "\n" not in message
    assert message == (
        "unknown setting LAZYLOAD_GRPC__TLS_CERT_FLE (did you mean LAZYLOAD_GRPC__TLS_CERT_FILE?)"
        " (and 1 more)"
    )


def test_from_environment_reads_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAZYLOAD_GRPC__TLS_CERT_FILE", "/tls/cert.pem")
    monkeypatch.setenv("LAZYLOAD_FENCE__BATCH", "3")  # another service's: not ours, not a typo
    loaded = settings.from_environment(Service)
    assert loaded.grpc.tls_cert_file == "/tls/cert.pem"


def test_a_bad_value_is_one_line_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAZYLOAD_GRPC__PORT", "eighty")
    with pytest.raises(errors.ConfigError, match=r"^invalid setting LAZYLOAD_GRPC__PORT: ") as e:
        settings.from_environment(Service)
    assert "\n" not in str(e.value)
