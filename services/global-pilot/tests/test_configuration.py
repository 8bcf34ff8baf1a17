"""Settings from the environment and the Envoy bootstrap of the global-sidecar.

Covers: `LAZYLOAD_*` variables reach each group (listener ports as a list or comma-separated);
`check()` names every bad setting; the render options follow the settings; the bootstrap is a
valid Envoy v3 Bootstrap with ADS (LDS/CDS over ADS) and an HTTP/2 xDS cluster, static for an IP
and DNS for a name; `dump` writes it as JSON.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.resource_monitors.downstream_connections.v3 import (  # noqa: F401 (Any types)
    downstream_connections_pb2,
)
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from google.protobuf import json_format
from lazyload_common import errors
from lazyload_global_pilot import bootstrap
from lazyload_global_pilot.settings import GlobalPilotSettings


def test_environment_reaches_every_group(monkeypatch):
    for name, value in {
        "LAZYLOAD_XDS__PORT": "0",
        "LAZYLOAD_LISTENER__ADDRESS": "127.0.0.1",
        "LAZYLOAD_LISTENER__PORTS": "80,8080",
        "LAZYLOAD_ALS__HOST": "ingest.mesh-operator.svc",
        "LAZYLOAD_ALS__PORT": "9999",
        "LAZYLOAD_MESH__CLUSTER_DOMAIN": "corp.example",
        "LAZYLOAD_WATCH__DEBOUNCE": "0.25",
        "LAZYLOAD_ADMIN__PORT": "0",
    }.items():
        monkeypatch.setenv(name, value)
    settings = GlobalPilotSettings()
    settings.check()
    assert settings.xds.port == 0
    assert settings.listener.ports == (80, 8080)
    assert settings.watch.debounce == 0.25
    options = settings.render_options()
    assert options.listener_address == "127.0.0.1"
    assert options.listener_ports == (80, 8080)
    assert options.cluster_domain == "corp.example"
    assert options.als is not None
    assert (options.als.host, options.als.port) == ("ingest.mesh-operator.svc", 9999)


@pytest.mark.parametrize("value", ["[80, 8080]", "80, 8080"])
def test_listener_ports_as_json_or_comma_separated(monkeypatch, value):
    monkeypatch.setenv("LAZYLOAD_LISTENER__PORTS", value)
    assert GlobalPilotSettings().listener.ports == (80, 8080)


def test_defaults_are_slime_like():
    settings = GlobalPilotSettings()
    assert settings.listener.ports == (80,)
    assert settings.als.port == 8082
    assert settings.watched_kinds() == ("services", "endpoints", "endpointslices", "serviceentries")


def test_als_can_be_disabled(monkeypatch):
    monkeypatch.setenv("LAZYLOAD_ALS__ENABLED", "false")
    assert GlobalPilotSettings().render_options().als is None


def test_check_names_every_bad_setting():
    settings = GlobalPilotSettings.model_validate(
        {
            "listener": {"ports": [80, 80]},
            "mesh": {"cluster_domain": "Not A Domain"},
            "watch": {"endpoints": False, "endpoint_slices": False},
            "xds": {"port": 8080},
            "admin": {"port": 8080},
        }
    )
    with pytest.raises(errors.ConfigError) as caught:
        settings.check()
    message = str(caught.value)
    for field in ("mesh.cluster_domain", "listener.ports", "watch", "xds.port"):
        assert field in message


def test_wormhole_routing_and_mesh_side_from_the_environment(monkeypatch):
    for name, value in {
        "LAZYLOAD_LISTENER__PORTS": "80",
        "LAZYLOAD_LISTENER__TCP_PORTS": "3306,6379",
        "LAZYLOAD_LISTENER__AUTO_PORT": "true",
        "LAZYLOAD_LISTENER__CLEANUP_WORMHOLE_PORT": "true",
        "LAZYLOAD_ROUTING__PASSTHROUGH_BY_DEFAULT": "false",
        "LAZYLOAD_ROUTING__DISPATCHES": json.dumps(
            [
                {"name": "ext", "domains": ["*.example.com"], "cluster": "_PASSTHROUGH"},
                {"name": "bare", "domainRegex": "^[^.]+$", "cluster": "_GLOBAL_SIDECAR"},
            ]
        ),
        "LAZYLOAD_GLOBAL_SIDECAR__MODE": "namespace",
        "LAZYLOAD_GLOBAL_SIDECAR__APPLY": "true",
        "LAZYLOAD_GLOBAL_SIDECAR__NAMESPACES": "shop,pay",
    }.items():
        monkeypatch.setenv(name, value)
    settings = GlobalPilotSettings()
    settings.check()
    assert settings.listener.tcp_ports == (3306, 6379)
    options = settings.render_options()
    assert options.tcp_ports == (3306, 6379)
    assert not options.passthrough_by_default
    assert [d.name for d in options.dispatches] == ["ext", "bare"]
    assert options.dispatches[1].domain_regex == "^[^.]+$"
    side = settings.mesh_side_options()
    assert (side.mode, side.namespaces) == ("namespace", ("shop", "pay"))
    ports = settings.wormhole_ports()
    assert ports.auto and ports.cleanup
    assert ports.exclude == {("shop", "global-sidecar"), ("pay", "global-sidecar")}


def test_check_names_bad_wormhole_and_mesh_side_settings():
    settings = GlobalPilotSettings.model_validate(
        {
            "listener": {"ports": [80], "tcp_ports": [80]},
            "routing": {
                "dispatches": [
                    {"name": "a", "domains": ["x"], "cluster": "c"},
                    {"name": "a", "domains": ["y"], "cluster": "c"},
                ]
            },
            "global_sidecar": {"mode": "namespace", "apply": True},
        }
    )
    with pytest.raises(errors.ConfigError) as caught:
        settings.check()
    for field in ("listener.tcp_ports", "routing.dispatches", "global_sidecar.namespaces"):
        assert field in str(caught.value)


@pytest.mark.parametrize(
    "dispatch",
    [
        {"name": "a", "cluster": "c"},
        {"name": "a", "domains": ["x"], "domainRegex": "y", "cluster": "c"},
        {"name": "a", "domainRegex": "(", "cluster": "c"},
    ],
)
def test_a_dispatch_needs_domains_or_a_valid_regex(dispatch):
    with pytest.raises(ValueError):
        GlobalPilotSettings.model_validate({"routing": {"dispatches": [dispatch]}})


def _parse(config: dict) -> bootstrap_pb2.Bootstrap:
    return json_format.ParseDict(config, bootstrap_pb2.Bootstrap())


def test_bootstrap_is_a_valid_ads_bootstrap():
    config = bootstrap.render_bootstrap(xds_host="127.0.0.1", xds_port=18000, node_id="gs-0")
    parsed = _parse(config)
    assert parsed.node.id == "gs-0"
    assert parsed.node.cluster == "global-sidecar"
    ads = parsed.dynamic_resources.ads_config
    assert ads.api_type == ads.GRPC
    assert ads.grpc_services[0].envoy_grpc.cluster_name == bootstrap.XDS_CLUSTER
    assert parsed.dynamic_resources.lds_config.HasField("ads")
    assert parsed.dynamic_resources.cds_config.HasField("ads")
    (cluster,) = parsed.static_resources.clusters
    assert cluster.name == bootstrap.XDS_CLUSTER
    assert cluster.type == cluster.STATIC
    address = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address
    assert (address.socket_address.address, address.socket_address.port_value) == (
        "127.0.0.1",
        18000,
    )
    assert "envoy.extensions.upstreams.http.v3.HttpProtocolOptions" in (
        cluster.typed_extension_protocol_options
    )


def test_bootstrap_resolves_a_named_control_plane_by_dns():
    config = bootstrap.render_bootstrap(xds_host="global-pilot.mesh-operator.svc", xds_port=1)
    assert _parse(config).static_resources.clusters[0].type == cluster_pb2.Cluster.STRICT_DNS


def test_dump_writes_json(tmp_path):
    config = bootstrap.render_bootstrap(xds_host="127.0.0.1", xds_port=1)
    path = bootstrap.dump(config, tmp_path / "envoy.json")
    assert json.loads(path.read_text()) == config


def test_readme_bootstrap_example_runs(tmp_path, monkeypatch):
    readme = Path(__file__).parents[1] / "README.md"
    (block,) = re.findall(r"```python\n(.*?)```", readme.read_text(), flags=re.S)
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})
    assert _parse(json.loads((tmp_path / "global-sidecar.json").read_text())).node.id
