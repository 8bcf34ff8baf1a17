"""The global-sidecar's ALS cluster with mutual TLS (issue 16): `LAZYLOAD_ALS__TLS_*` render a TLS
transport socket (ingest's certificate checked against the CA and the server name, the
global-sidecar's own certificate presented, ALPN h2), none without them; inconsistent settings
are refused. The e2e test `tests/e2e/test_als_mtls.py` runs it through a real Envoy."""

from __future__ import annotations

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from lazyload_global_pilot import rendering, resources
from lazyload_global_pilot.mesh import MeshState
from lazyload_global_pilot.settings import AlsSettings, GlobalPilotSettings


def _als_cluster(als: AlsSettings) -> cluster_pb2.Cluster:
    options = GlobalPilotSettings(als=als).render_options()
    cluster = rendering.render(MeshState.of([]), options)[resources.CLUSTER][
        "lazyload-accesslog-ingest"
    ]
    assert isinstance(cluster, cluster_pb2.Cluster)
    return cluster


def test_als_cluster_uses_mutual_tls_when_configured() -> None:
    cluster = _als_cluster(
        AlsSettings(
            host="accesslog-ingest.mesh-operator.svc",
            tls_ca_file="/etc/als/ca.crt",
            tls_cert_file="/etc/als/tls.crt",
            tls_key_file="/etc/als/tls.key",
            tls_server_name="accesslog-ingest",
        )
    )
    socket = cluster.transport_socket
    assert socket.name == "envoy.transport_sockets.tls"
    context = tls_pb2.UpstreamTlsContext()
    assert socket.typed_config.Unpack(context)
    assert context.sni == "accesslog-ingest"
    common = context.common_tls_context
    assert list(common.alpn_protocols) == ["h2"]
    assert common.validation_context.trusted_ca.filename == "/etc/als/ca.crt"
    [san] = common.validation_context.match_typed_subject_alt_names
    assert san.matcher.exact == "accesslog-ingest"
    [cert] = common.tls_certificates
    assert cert.certificate_chain.filename == "/etc/als/tls.crt"
    assert cert.private_key.filename == "/etc/als/tls.key"


def test_als_cluster_is_plaintext_without_tls_settings() -> None:
    assert not _als_cluster(AlsSettings()).HasField("transport_socket")


@pytest.mark.parametrize(
    "values",
    [
        {"tls_ca_file": "/ca", "tls_cert_file": "/c"},  # no key
        {"tls_cert_file": "/c", "tls_key_file": "/k"},  # a client cert without TLS
        {"tls_server_name": "accesslog-ingest"},
    ],
)
def test_inconsistent_als_tls_settings_are_refused(values: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="tls_"):
        AlsSettings.model_validate(values)
