"""Rendering of the mesh into Envoy resources (pure, no I/O).

Covers: one listener per wormhole port with RDS over ADS, codec AUTO and the ALS logger; the
virtual host domains of a Service port (FQDN forms, `:port`, bare forms for port 80, cluster IP);
short names resolved by `Slime-Source-Ns` or uniqueness; the catch-all; duplicate domains; EDS
clusters and their load assignments (target ports by name or number, no endpoints); HTTP/2
upstreams; the ALS cluster; determinism.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.access_loggers.grpc.v3 import als_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from lazyload_global_pilot import rendering, resources
from lazyload_global_pilot.mesh import EndpointGroup, EndpointPort, MeshState, Service, ServicePort

OPTIONS = rendering.RenderOptions(
    listener_address="127.0.0.1",
    listener_ports=(80, 8080),
    als=rendering.AlsTarget(host="10.0.0.5", port=8082),
)
DETAILS = "outbound|9080||details.default.svc.cluster.local"


def _render(*services: Service, options: rendering.RenderOptions = OPTIONS) -> dict:
    return rendering.render(MeshState.of(list(services)), options)


def _routes(*services: Service) -> route_pb2.RouteConfiguration:
    return _render(*services)[resources.ROUTE]["global-sidecar"]


def _vhost(config: route_pb2.RouteConfiguration, name: str):
    return next(v for v in config.virtual_hosts if v.name == name)


def _manager(listener) -> hcm_pb2.HttpConnectionManager:
    manager = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(manager)
    return manager


def test_one_listener_per_port_with_rds_over_ads_and_auto_codec():
    listeners = _render()[resources.LISTENER]
    assert sorted(listeners) == ["127.0.0.1_80", "127.0.0.1_8080"]
    listener = listeners["127.0.0.1_8080"]
    assert listener.address.socket_address.address == "127.0.0.1"
    assert listener.address.socket_address.port_value == 8080
    manager = _manager(listener)
    assert manager.codec_type == hcm_pb2.HttpConnectionManager.AUTO
    assert manager.rds.route_config_name == "global-sidecar"
    assert manager.rds.config_source.HasField("ads")
    assert [f.name for f in manager.http_filters] == ["envoy.filters.http.router"]
    assert manager.forward_client_cert_details == hcm_pb2.HttpConnectionManager.ALWAYS_FORWARD_ONLY


def test_access_log_goes_to_accesslog_ingest_over_grpc_als():
    manager = _manager(_render()[resources.LISTENER]["127.0.0.1_80"])
    (logger,) = manager.access_log
    assert logger.name == "envoy.access_loggers.http_grpc"
    config = als_pb2.HttpGrpcAccessLogConfig()
    logger.typed_config.Unpack(config)
    common = config.common_config
    assert common.log_name == "lazyload-global-sidecar"
    assert common.grpc_service.envoy_grpc.cluster_name == "lazyload-accesslog-ingest"
    assert common.transport_api_version == 2  # V3
    assert common.buffer_flush_interval.ToMilliseconds() == 100
    assert list(config.additional_request_headers_to_log) == [
        "slime-source-ns",
        "slime-orig-dest",
        "x-forwarded-for",
        "lazyload-source-ip",
        "x-forwarded-client-cert",
    ]


def test_without_als_there_is_no_logger_and_no_als_cluster():
    rendered = _render(options=OPTIONS.model_copy(update={"als": None}))
    assert not _manager(rendered[resources.LISTENER]["127.0.0.1_80"]).access_log
    assert "lazyload-accesslog-ingest" not in rendered[resources.CLUSTER]


def test_service_port_domains_in_every_dns_form_with_port(make_service):
    vhost = _vhost(_routes(make_service("details", cluster_ip="10.96.0.7")), "details.default:9080")
    assert list(vhost.domains) == [
        "details.default:9080",
        "details.default.svc:9080",
        "details.default.svc.cluster.local:9080",
        "10.96.0.7:9080",
    ]
    assert vhost.routes[0].route.cluster == DETAILS


def test_port_80_also_answers_the_bare_names(make_service):
    vhost = _vhost(_routes(make_service("web", port=80)), "web.default:80")
    assert "web.default.svc.cluster.local" in vhost.domains
    assert "web.default.svc.cluster.local:80" in vhost.domains
    assert "web.default" in vhost.domains
    assert "web" in _vhost(_routes(make_service("web", port=80)), "web:80").domains


def test_cluster_domain_is_configurable(make_service):
    options = OPTIONS.model_copy(update={"cluster_domain": "corp.example"})
    rendered = _render(make_service("details"), options=options)
    assert "outbound|9080||details.default.svc.corp.example" in rendered[resources.CLUSTER]


def test_unique_short_name_resolves_with_or_without_source_namespace(make_service):
    vhost = _vhost(_routes(make_service("details")), "details:9080")
    assert list(vhost.domains) == ["details:9080"]
    by_header, fallback = vhost.routes
    assert by_header.match.headers[0].name == "slime-source-ns"
    assert by_header.match.headers[0].string_match.exact == "default"
    assert by_header.route.cluster == DETAILS
    assert not fallback.match.headers
    assert fallback.route.cluster == DETAILS


def test_ambiguous_short_name_resolves_only_by_source_namespace(make_service):
    vhost = _vhost(_routes(make_service("db", "a"), make_service("db", "b")), "db:9080")
    assert [(r.match.headers[0].string_match.exact, r.route.cluster) for r in vhost.routes] == [
        ("a", "outbound|9080||db.a.svc.cluster.local"),
        ("b", "outbound|9080||db.b.svc.cluster.local"),
    ]


def test_unknown_hosts_fall_to_a_catch_all_without_routes(make_service):
    config = _routes(make_service("details"))
    catch_all = config.virtual_hosts[-1]
    assert list(catch_all.domains) == ["*"]
    assert not catch_all.routes  # Envoy answers 404 with response flag NR


def test_a_domain_is_never_repeated_across_virtual_hosts(make_service):
    # Two Services sharing a cluster IP (a broken mesh) must not make Envoy reject the routes.
    config = _routes(
        make_service("a", cluster_ip="10.0.0.1"), make_service("b", cluster_ip="10.0.0.1")
    )
    domains = [d for v in config.virtual_hosts for d in v.domains]
    assert len(domains) == len(set(domains))
    assert "10.0.0.1:9080" in _vhost(config, "a.default:9080").domains


def test_eds_cluster_per_service_port_over_ads():
    service = Service(
        namespace="default",
        name="reviews",
        ports=(ServicePort(name="http", port=9080), ServicePort(name="grpc-api", port=9090)),
    )
    clusters = _render(service)[resources.CLUSTER]
    assert sorted(clusters) == [
        "lazyload-accesslog-ingest",
        "outbound|9080||reviews.default.svc.cluster.local",
        "outbound|9090||reviews.default.svc.cluster.local",
    ]
    http = clusters["outbound|9080||reviews.default.svc.cluster.local"]
    assert http.type == cluster_pb2.Cluster.EDS
    assert http.eds_cluster_config.eds_config.HasField("ads")
    assert http.eds_cluster_config.service_name == http.name
    assert not http.typed_extension_protocol_options
    grpc = clusters["outbound|9090||reviews.default.svc.cluster.local"]
    assert _is_http2(grpc)


def test_app_protocol_decides_http2_over_the_port_name():
    port = ServicePort(name="grpc", port=1, app_protocol="http")
    service = Service(namespace="n", name="s", ports=(port,))
    assert not _is_http2(_render(service)[resources.CLUSTER]["outbound|1||s.n.svc.cluster.local"])


def _is_http2(cluster: cluster_pb2.Cluster) -> bool:
    packed = cluster.typed_extension_protocol_options.get(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    )
    if packed is None:
        return False
    options = http_protocol_options_pb2.HttpProtocolOptions()
    packed.Unpack(options)
    return options.explicit_http_config.HasField("http2_protocol_options")


def _addresses(assignment) -> list[tuple[str, int]]:
    return [
        (e.endpoint.address.socket_address.address, e.endpoint.address.socket_address.port_value)
        for locality in assignment.endpoints
        for e in locality.lb_endpoints
    ]


def test_load_assignment_resolves_target_ports_by_endpoint_port_name():
    service = Service(
        namespace="default",
        name="reviews",
        ports=(
            ServicePort(name="http", port=9080, target_port="web"),
            ServicePort(name="admin", port=15000),
        ),
        endpoints=(
            EndpointGroup(
                addresses=("10.1.0.2", "10.1.0.1"),
                ports=(
                    EndpointPort(name="http", port=8080),
                    EndpointPort(name="admin", port=15001),
                ),
            ),
            EndpointGroup(addresses=("10.1.0.3",), ports=(EndpointPort(name="http", port=8081),)),
        ),
    )
    assignments = _render(service)[resources.ENDPOINT]
    http = assignments["outbound|9080||reviews.default.svc.cluster.local"]
    assert http.cluster_name == "outbound|9080||reviews.default.svc.cluster.local"
    assert _addresses(http) == [("10.1.0.1", 8080), ("10.1.0.2", 8080), ("10.1.0.3", 8081)]
    admin = assignments["outbound|15000||reviews.default.svc.cluster.local"]
    assert _addresses(admin) == [("10.1.0.1", 15001), ("10.1.0.2", 15001)]


def test_load_assignment_falls_back_to_numeric_target_port_or_port():
    numeric = ServicePort(name="http", port=80, target_port=8080)
    plain = ServicePort(name="other", port=81)
    group = EndpointGroup(addresses=("10.1.0.1",))
    service = Service(namespace="n", name="s", ports=(numeric, plain), endpoints=(group,))
    assignments = _render(service)[resources.ENDPOINT]
    assert _addresses(assignments["outbound|80||s.n.svc.cluster.local"]) == [("10.1.0.1", 8080)]
    assert _addresses(assignments["outbound|81||s.n.svc.cluster.local"]) == [("10.1.0.1", 81)]


def test_service_without_endpoints_gets_an_empty_assignment(make_service):
    assignment = _render(make_service("details"))[resources.ENDPOINT][DETAILS]
    assert assignment.cluster_name == DETAILS
    assert not assignment.endpoints


def test_als_cluster_is_static_for_an_ip_and_dns_for_a_name():
    static = _render()[resources.CLUSTER]["lazyload-accesslog-ingest"]
    assert static.type == cluster_pb2.Cluster.STATIC
    assert _addresses(static.load_assignment) == [("10.0.0.5", 8082)]
    assert _is_http2(static)
    named = OPTIONS.model_copy(
        update={"als": rendering.AlsTarget(host="ingest.mesh-operator.svc", port=8082)}
    )
    dns = _render(options=named)[resources.CLUSTER]["lazyload-accesslog-ingest"]
    assert dns.type == cluster_pb2.Cluster.STRICT_DNS


def test_rendering_is_deterministic_whatever_the_input_order(make_service):
    a, b = make_service("a", endpoints=(("10.0.0.1", 1),)), make_service("b", "other")
    first, second = _render(a, b), _render(b, a)
    for type_url in first:
        assert {n: m.SerializeToString(deterministic=True) for n, m in first[type_url].items()} == {
            n: m.SerializeToString(deterministic=True) for n, m in second[type_url].items()
        }


def test_tcp_ports_forward_to_the_original_destination_with_the_tcp_logger():
    from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

    options = OPTIONS.model_copy(update={"tcp_ports": (3306,)})
    rendered = _render(options=options)
    listener = rendered[resources.LISTENER]["127.0.0.1_3306"]
    assert [f.name for f in listener.listener_filters] == [
        "envoy.filters.listener.original_dst",
        "envoy.filters.listener.proxy_protocol",
    ]
    proxy = tcp_proxy_pb2.TcpProxy()
    listener.filter_chains[0].filters[0].typed_config.Unpack(proxy)
    assert proxy.cluster == rendering.TCP_PASSTHROUGH_CLUSTER
    logger = als_pb2.TcpGrpcAccessLogConfig()
    proxy.access_log[0].typed_config.Unpack(logger)
    assert logger.common_config.log_name == "lazyload-global-sidecar"
    cluster = rendered[resources.CLUSTER][rendering.TCP_PASSTHROUGH_CLUSTER]
    assert cluster.type == cluster_pb2.Cluster.ORIGINAL_DST
    assert cluster.lb_policy == cluster_pb2.Cluster.CLUSTER_PROVIDED


def test_passthrough_by_default_needs_the_original_destination_header(make_service):
    options = OPTIONS.model_copy(update={"passthrough_by_default": True})
    rendered = _render(make_service("details"), options=options)
    (route,) = rendered[resources.ROUTE]["global-sidecar"].virtual_hosts[-1].routes
    assert route.route.cluster == "PassthroughCluster"
    assert route.match.headers[0].name == "slime-orig-dest"
    assert route.match.headers[0].present_match
    cluster = rendered[resources.CLUSTER]["PassthroughCluster"]
    assert cluster.type == cluster_pb2.Cluster.ORIGINAL_DST
    assert cluster.original_dst_lb_config.use_http_header
    assert cluster.original_dst_lb_config.http_header_name == "slime-orig-dest"


def test_dispatches_render_before_services_and_in_the_catch_all(make_service):
    from lazyload_global_pilot.dispatches import Dispatch

    options = OPTIONS.model_copy(
        update={
            "dispatches": (
                Dispatch(
                    name="ext",
                    domains=("*.example.com",),
                    cluster="outbound|80||e.gw.svc.cluster.local",
                ),
                Dispatch(name="bare", domainRegex=r"^[^.]+$", cluster="PassthroughCluster"),
                Dispatch(name="gs", domains=("*.learn",), cluster="_GLOBAL_SIDECAR"),
            )
        }
    )
    config = _render(make_service("details"), options=options)[resources.ROUTE]["global-sidecar"]
    assert config.virtual_hosts[0].name == "dispatch-ext"
    assert "dispatch-gs" not in [v.name for v in config.virtual_hosts]
    (bare,) = config.virtual_hosts[-1].routes
    assert [h.name for h in bare.match.headers] == ["slime-orig-dest", ":authority"]
    assert bare.match.headers[1].string_match.safe_regex.regex == r"^[^.]+$"
    assert bare.route.cluster == "PassthroughCluster"


def test_unnamed_ports_follow_the_downstream_protocol():
    service = Service(namespace="n", name="s", ports=(ServicePort(port=1),))
    cluster = _render(service)[resources.CLUSTER]["outbound|1||s.n.svc.cluster.local"]
    packed = cluster.typed_extension_protocol_options[
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    options = http_protocol_options_pb2.HttpProtocolOptions()
    packed.Unpack(options)
    assert options.HasField("use_downstream_protocol_config")
