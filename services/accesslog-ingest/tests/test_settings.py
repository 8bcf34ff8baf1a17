"""Settings: defaults, environment variables (`LAZYLOAD_` prefix, `__` nesting), start-up checks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from lazyload_accesslog_ingest.settings import GrpcSettings, IngestSettings
from lazyload_common import errors
from lazyload_common.settings import AdminSettings, MeshSettings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("LAZYLOAD_"):
            monkeypatch.delenv(key)
    s = IngestSettings()
    assert (s.grpc.host, s.grpc.port) == ("0.0.0.0", 8082)
    assert s.dedup.max_edges == 100_000 and s.dedup.refresh_interval == 300
    assert s.publish.max_in_flight == 512 and s.publish.buffer_size == 100_000
    assert s.reporter == socket.gethostname()
    assert s.mesh.cluster_domain == "cluster.local"
    s.check()


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "LAZYLOAD_GRPC__PORT": "0",
        "LAZYLOAD_GRPC__HOST": "127.0.0.1",
        "LAZYLOAD_GRPC__MAX_MESSAGE_BYTES": "65536",
        "LAZYLOAD_DEDUP__MAX_EDGES": "10",
        "LAZYLOAD_DEDUP__REFRESH_INTERVAL": "60",
        "LAZYLOAD_PUBLISH__MAX_IN_FLIGHT": "8",
        "LAZYLOAD_PUBLISH__BUFFER_SIZE": "1000",
        "LAZYLOAD_REPORTER": "ingest-0",
        "LAZYLOAD_NATS__URL": "nats://nats:4222",
        "LAZYLOAD_MESH__CLUSTER_DOMAIN": "corp.local",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = IngestSettings()
    assert (s.grpc.host, s.grpc.port, s.grpc.max_message_bytes) == ("127.0.0.1", 0, 65536)
    assert (s.dedup.max_edges, s.dedup.refresh_interval) == (10, 60.0)
    assert (s.publish.max_in_flight, s.publish.buffer_size) == (8, 1000)
    assert s.reporter == "ingest-0"
    assert s.nats.url == "nats://nats:4222"
    assert s.mesh.cluster_domain == "corp.local"


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"grpc": {"port": 70000}}, "grpc.port"),
        ({"dedup": {"max_edges": 0}}, "dedup.max_edges"),
        ({"dedup": {"refresh_interval": 0}}, "dedup.refresh_interval"),
        ({"publish": {"max_in_flight": 0}}, "publish.max_in_flight"),
    ],
)
def test_invalid_values(values: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field.split(".")[1]):
        IngestSettings.model_validate(values)


def test_check_names_every_bad_field() -> None:
    s = IngestSettings(
        mesh=MeshSettings(cluster_domain="Bad_Domain"),
        grpc=GrpcSettings(host="0.0.0.0", port=9000),
        admin=AdminSettings(host="0.0.0.0", port=9000),
    )
    with pytest.raises(errors.ConfigError) as info:
        s.check()
    assert "mesh.cluster_domain" in str(info.value) and "grpc.port" in str(info.value)


def test_limits_tls_and_edges_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "LAZYLOAD_GRPC__MAX_STREAMS": "7",
        "LAZYLOAD_GRPC__STREAM_IDLE_TIMEOUT": "30",
        "LAZYLOAD_GRPC__MAX_MALFORMED_PER_STREAM": "3",
        "LAZYLOAD_GRPC__REQUIRE_CLIENT_CERT": "true",
        "LAZYLOAD_EDGES__PUBLISH_UNRESOLVED": "true",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = IngestSettings()
    assert (s.grpc.max_streams, s.grpc.stream_idle_timeout) == (7, 30)
    assert s.grpc.max_malformed_per_stream == 3 and s.grpc.require_client_cert
    assert s.edges.publish_unresolved is True
    assert IngestSettings.model_construct().edges.publish_unresolved is False  # the default


@pytest.mark.parametrize(
    ("grpc", "problem"),
    [
        ({"tls_cert_file": "CERT"}, "set both or neither"),
        ({"tls_key_file": "KEY"}, "set both or neither"),
        ({"require_client_cert": True}, "need grpc.tls_cert_file"),
        ({"tls_cert_file": "CERT", "tls_key_file": "KEY", "require_client_cert": True}, "needs"),
        ({"tls_cert_file": "CERT", "tls_key_file": "KEY", "tls_client_ca_file": "CERT"}, "only"),
        ({"tls_cert_file": "/nonexistent.pem", "tls_key_file": "KEY"}, "no such file"),
    ],
)
def test_tls_checks(tmp_path, grpc: dict[str, object], problem: str) -> None:
    pem = tmp_path / "x.pem"
    pem.write_text("x")
    values = {k: (str(pem) if v in ("CERT", "KEY") else v) for k, v in grpc.items()}
    with pytest.raises(errors.ConfigError, match=problem):
        IngestSettings(grpc=GrpcSettings.model_validate(values)).check()


def test_a_misspelt_tls_variable_stops_the_service_at_start(tmp_path) -> None:
    """`LAZYLOAD_GRPC__TLS_CERT_FLE` used to be ignored: the ALS port served plaintext. The
    console script now refuses to start, with one line naming the variable (#16)."""
    cert = tmp_path / "cert.pem"
    cert.write_text("not used")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("LAZYLOAD_")}
    env |= {
        "LAZYLOAD_GRPC__TLS_CERT_FLE": str(cert),
        "LAZYLOAD_NATS__URL": "nats://127.0.0.1:1",  # never reached
        "LAZYLOAD_ADMIN__PORT": "0",
        "LAZYLOAD_GRPC__PORT": "0",
    }
    script = Path(sys.executable).parent / "lazyload-accesslog-ingest"
    done = subprocess.run(
        [str(script)], env=env, capture_output=True, text=True, timeout=20, check=False
    )
    assert done.returncode != 0
    assert done.stderr.strip() == (
        "lazyload-accesslog-ingest: unknown setting LAZYLOAD_GRPC__TLS_CERT_FLE "
        "(did you mean LAZYLOAD_GRPC__TLS_CERT_FILE?)"
    )


def test_streams_times_message_size_must_fit_the_memory_budget() -> None:
    """16 MiB x 1,024 streams (the old defaults) could take 16 GiB under a 512 MiB limit (#19):
    the defaults fit the budget, and settings whose worst case does not are refused."""
    defaults = IngestSettings().grpc
    assert defaults.max_streams * defaults.max_message_bytes <= defaults.message_memory_bytes
    IngestSettings().check()
    with pytest.raises(errors.ConfigError, match="message_memory_bytes"):
        IngestSettings(grpc=GrpcSettings(max_message_bytes=16 * 1024 * 1024)).check()
    IngestSettings(grpc=GrpcSettings(max_message_bytes=16 * 1024 * 1024, max_streams=16)).check()
