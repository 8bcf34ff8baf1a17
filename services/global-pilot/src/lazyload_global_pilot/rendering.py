"""Translator: mesh state -> the Envoy v3 resources of the global-sidecar (pure, no I/O).

`render(mesh, options)` returns resources keyed by type URL and name, ready for a `Snapshot`:

- one HTTP listener per HTTP wormhole port, whose connection manager (codec AUTO: HTTP/1.1, h2c,
  gRPC) takes its routes over RDS (ADS) and sends every request to accesslog-ingest over gRPC ALS;
- one TCP listener per TCP wormhole port: the original destination (SO_ORIGINAL_DST after an
  iptables redirect, or a PROXY protocol header) through `tcp_proxy`, logged by the TCP gRPC ALS;
- one route configuration shared by the HTTP listeners: the `dispatches` with domains first, a
  virtual host per Service port (its name in every DNS form a client may send as Host), a virtual
  host per short name and port that picks the namespace by the `Slime-Source-Ns` header, and the
  catch-all `*`: the regex dispatches, then (with `passthrough_by_default`) the original
  destination named by `Slime-Orig-Dest`; a request that matches nothing gets 404, flag NR;
- per ServiceEntry host and HTTP port, a virtual host `host[:port]`: STATIC entries get an EDS
  cluster `outbound|<port>||<host>` of their endpoints, DNS ones a STRICT_DNS cluster, NONE ones
  (and wildcard hosts) the original destination;
- one EDS cluster per Service port, `outbound|<port>||<fqdn>`, and its ClusterLoadAssignment;
- the ORIGINAL_DST clusters (`PassthroughCluster` by header, `lazyload-passthrough-tcp`) and the
  static-from-CDS cluster of accesslog-ingest;
- with `tcp_steering`, per steered TCP Service port (`tunnels.steered`) a virtual host for
  `<ClusterIP>:<port>`, the `:authority` of the HTTP POST tunnel a caller's sidecar opens for a
  TCP connection it does not know: the route terminates the tunnel (`allow_post`) and sends the
  bytes to the Service (its EDS cluster; with `original_destination`, a STATIC cluster
  `lazyload-tunnel|<port>||<fqdn>` of the ClusterIP, which the pod's istio-proxy takes), the Host
  rewritten to `<fqdn>:<port>` so the access log names the Service. Access logs of open streams
  are flushed every `ACCESS_LOG_FLUSH_SECONDS`, so a long-lived connection is learned while it
  lasts. Only those addresses are served: no open TCP relay.

With `upstream="original_destination"` (a global-sidecar pod with its own istio-proxy, as the chart
deploys it) the global-sidecar resolves nothing itself: every call goes to the address the caller
dialled (`Slime-Orig-Dest`), where the pod's istio-proxy captures it and routes it by Host with the
mesh's VirtualServices, DestinationRules and mTLS. Only the dispatches and the short names remain:
a short name (`details`) is rewritten to the FQDN of the caller's namespace (`Slime-Source-Ns`),
which the istio-proxy would otherwise resolve in the global-sidecar's own namespace. No Service or
ServiceEntry cluster is rendered.

It must stay pure: same input, same resources (the snapshot version is a hash of them).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Literal

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import (
    address_pb2,
    base_pb2,
    config_source_pb2,
    grpc_service_pb2,
    protocol_pb2,
)
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.access_loggers.grpc.v3 import als_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2
from envoy.extensions.filters.listener.proxy_protocol.v3 import proxy_protocol_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2 as tls_common_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from lazyload_common import hosts
from pydantic import BaseModel, ConfigDict, Field

from lazyload_global_pilot import dispatches as dispatching
from lazyload_global_pilot import ports as wormhole
from lazyload_global_pilot import resources, tunnels
from lazyload_global_pilot.dispatches import Dispatch
from lazyload_global_pilot.mesh import (
    EndpointGroup,
    MeshState,
    Service,
    ServiceEntry,
    ServicePort,
    resolve_target_port,
)

SOURCE_NS_HEADER = "slime-source-ns"
ACCESS_LOG_FLUSH_SECONDS = 5
ORIG_DEST_HEADER = "slime-orig-dest"
SOURCE_IP_HEADER = "lazyload-source-ip"
CLIENT_CERT_HEADER = "x-forwarded-client-cert"
LOGGED_REQUEST_HEADERS = (
    SOURCE_NS_HEADER,
    ORIG_DEST_HEADER,
    "x-forwarded-for",
    SOURCE_IP_HEADER,
    CLIENT_CERT_HEADER,
)
_HTTP2_PROTOCOLS = frozenset({"http2", "grpc", "grpc-web", "h2c", "kubernetes.io/h2c"})
_HTTP1_PROTOCOLS = frozenset({"http", "http1", "http/1.1"})
PASSTHROUGH_CLUSTER = dispatching.ISTIO_PASSTHROUGH
TCP_PASSTHROUGH_CLUSTER = "lazyload-passthrough-tcp"
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


class AlsTls(BaseModel):
    """Mutual TLS of the ALS cluster: file paths as the global-sidecar's Envoy sees them."""

    model_config = ConfigDict(frozen=True)
    ca_file: str
    """PEM CA bundle accesslog-ingest's certificate must chain to."""
    cert_file: str = ""
    key_file: str = ""
    """The global-sidecar's client certificate and key (what ingest requires with mTLS)."""
    server_name: str = ""
    """SNI sent, and the DNS name ingest's certificate must carry (empty: chain only)."""


class AlsTarget(BaseModel):
    """Where the global-sidecar sends its access logs (accesslog-ingest's gRPC ALS listener)."""

    model_config = ConfigDict(frozen=True)
    host: str
    port: int = Field(ge=1, le=65535)
    tls: AlsTls | None = None


class RenderOptions(BaseModel):
    """What the rendering needs besides the mesh."""

    model_config = ConfigDict(frozen=True)
    listener_address: str = "0.0.0.0"
    listener_ports: tuple[int, ...] = (80,)
    """HTTP wormhole ports (HTTP/1.1, h2c and gRPC on each)."""
    tcp_ports: tuple[int, ...] = ()
    """TCP wormhole ports: forwarded to the original destination."""
    passthrough_by_default: bool = False
    """Unknown hosts with `Slime-Orig-Dest` go there (True) or get 404 NR (False)."""
    upstream: Literal["endpoints", "original_destination"] = "endpoints"
    """Where calls go: each Service's endpoints, or the caller's original destination (an
    istio-proxy in the global-sidecar's pod routes them)."""
    dispatches: tuple[Dispatch, ...] = ()
    cluster_domain: str = "cluster.local"
    als: AlsTarget | None = None
    als_cluster: str = "lazyload-accesslog-ingest"
    log_name: str = "lazyload-global-sidecar"
    route_config: str = "global-sidecar"
    connect_timeout_ms: int = Field(default=1000, ge=1)
    tcp_steering: bool = False
    """Serve the TCP tunnels of `tunnels.steered` (the EnvoyFilter's TCP filter chains)."""
    own_services: tuple[tuple[str, str], ...] = ()
    """(namespace, name) of the global-sidecar's own Services: never steered."""


def render(mesh: MeshState, options: RenderOptions) -> dict[str, dict[str, Message]]:
    """All resources of the global-sidecar for `mesh`, by type URL and name."""
    clusters: dict[str, Message] = {}
    assignments: dict[str, Message] = {}
    if options.upstream == "original_destination":
        mesh = MeshState(services=mesh.services)  # the istio-proxy resolves: names only
    for service in mesh.services if options.upstream == "endpoints" else ():
        for port in service.ports:
            name = cluster_name(service, port, options.cluster_domain)
            clusters[name] = _eds_cluster(name, port, options)
            assignments[name] = _load_assignment(name, service.endpoints, port)
    for entry, port, host, name in _entry_targets(mesh, clusters):
        if name is None:
            continue
        if entry.resolution == "STATIC":
            clusters[name] = _eds_cluster(name, port, options)
            assignments[name] = _load_assignment(name, entry.endpoints, port)
        else:
            clusters[name] = _dns_cluster(name, entry, port, host, options)
    if options.als is not None:
        clusters[options.als_cluster] = _als_cluster(options.als, options)
    if options.tcp_steering and options.listener_ports:
        for service, port, ip in tunnels.steered(mesh, options.own_services):
            if options.upstream == "original_destination":
                name = _tunnel_cluster(service, port, options)
                clusters[name] = _static_cluster(name, ip, port.port, options)
    routes: dict[str, Message] = (
        {options.route_config: _route_configuration(mesh, options)}
        if options.listener_ports
        else {}
    )
    if _routes_to(routes.values(), PASSTHROUGH_CLUSTER):
        clusters[PASSTHROUGH_CLUSTER] = _passthrough_cluster(options)
    listeners: dict[str, Message] = {}
    for port in options.listener_ports:
        listener = _listener(port, options)
        listeners[listener.name] = listener
    if options.tcp_ports:
        clusters[TCP_PASSTHROUGH_CLUSTER] = _tcp_passthrough_cluster(options)
    for port in options.tcp_ports:
        listener = _tcp_listener(port, options)
        listeners[listener.name] = listener
    return {
        resources.CLUSTER: clusters,
        resources.ENDPOINT: assignments,
        resources.LISTENER: listeners,
        resources.ROUTE: routes,
    }


def _routes_to(configs: Iterable[Message], cluster: str) -> bool:
    return any(
        route.route.cluster == cluster
        for config in configs
        if isinstance(config, route_pb2.RouteConfiguration)
        for vhost in config.virtual_hosts
        for route in vhost.routes
    )


def _entry_targets(
    mesh: MeshState, taken: Iterable[str]
) -> Iterable[tuple[ServiceEntry, ServicePort, str, str | None]]:
    """(entry, port, host, cluster name or None for the original destination) per ServiceEntry
    host and HTTP port; a cluster name already taken (a Service's, an earlier entry's) is not
    rendered twice: the first owner keeps it."""
    seen = set(taken)
    for entry in mesh.service_entries:
        for port in entry.ports:
            if wormhole.is_tcp(port):
                continue
            for host in entry.hosts:
                name = f"outbound|{port.port}||{host}"
                if entry.resolution == "NONE" or host.startswith("*"):
                    yield entry, port, host, None
                elif name not in seen:
                    seen.add(name)
                    yield entry, port, host, name


def cluster_name(service: Service, port: ServicePort, cluster_domain: str) -> str:
    """Istio's outbound cluster name of one Service port."""
    fqdn = hosts.service_fqdn(service.name, service.namespace, cluster_domain)
    return f"outbound|{port.port}||{fqdn}"


def service_domains(service: Service, port: ServicePort, cluster_domain: str) -> list[str]:
    """The Host values that mean this Service port, namespace included (port 80: bare too)."""
    n, ns = service.name, service.namespace
    names = [f"{n}.{ns}", f"{n}.{ns}.svc", f"{n}.{ns}.svc.{cluster_domain}"]
    if service.cluster_ip and service.cluster_ip != "None":
        names.append(service.cluster_ip)
    return list(_with_port(names, port.port))


def _with_port(names: Iterable[str], port: int) -> Iterable[str]:
    for name in names:
        yield f"{name}:{port}"
        if port == 80:
            yield name


def _any(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _ads() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.ApiVersion.V3,
    )


def _socket(host: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=host, port_value=port)
    )


# --- listeners ---------------------------------------------------------------------------------


def _listener(port: int, options: RenderOptions) -> listener_pb2.Listener:
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=f"global_sidecar_{port}",
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        rds=hcm_pb2.Rds(config_source=_ads(), route_config_name=options.route_config),
        http_filters=[
            hcm_pb2.HttpFilter(
                name="envoy.filters.http.router", typed_config=_any(router_pb2.Router())
            )
        ],
        access_log=[_access_logger(options)] if options.als is not None else [],
        # a long-lived stream (a tunnelled TCP connection, a gRPC stream) is logged, and so
        # learned, while it lasts, not only when it ends (the tunnel-established flush is for
        # CONNECT only, and these tunnels are POSTs)
        access_log_options=hcm_pb2.HttpConnectionManager.HcmAccessLogOptions(
            access_log_flush_interval=duration_pb2.Duration(seconds=ACCESS_LOG_FLUSH_SECONDS)
        ),
        # keep the x-forwarded-client-cert of the pod's inbound istio-proxy, which reaches this
        # Envoy over plaintext loopback (SANITIZE, the default, and FORWARD_ONLY drop it then,
        # before the access log sees it): it proves who the caller is (accesslog-ingest believes
        # it only from a loopback peer)
        forward_client_cert_details=hcm_pb2.HttpConnectionManager.ALWAYS_FORWARD_ONLY,
    )
    chain = listener_components_pb2.FilterChain(
        filters=[
            listener_components_pb2.Filter(
                name="envoy.filters.network.http_connection_manager", typed_config=_any(manager)
            )
        ]
    )
    return listener_pb2.Listener(
        name=f"{options.listener_address}_{port}",
        address=_socket(options.listener_address, port),
        filter_chains=[chain],
    )


def _common_als(options: RenderOptions) -> als_pb2.CommonGrpcAccessLogConfig:
    return als_pb2.CommonGrpcAccessLogConfig(
        log_name=options.log_name,
        grpc_service=grpc_service_pb2.GrpcService(
            envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=options.als_cluster)
        ),
        transport_api_version=config_source_pb2.ApiVersion.V3,
        buffer_flush_interval=duration_pb2.Duration(nanos=100_000_000),
    )


def _access_logger(options: RenderOptions) -> accesslog_pb2.AccessLog:
    config = als_pb2.HttpGrpcAccessLogConfig(
        common_config=_common_als(options),
        additional_request_headers_to_log=list(LOGGED_REQUEST_HEADERS),
    )
    return accesslog_pb2.AccessLog(name="envoy.access_loggers.http_grpc", typed_config=_any(config))


def _tcp_listener(port: int, options: RenderOptions) -> listener_pb2.Listener:
    """Forward every connection to its original destination: SO_ORIGINAL_DST when the kernel
    redirected it, overridden by a PROXY protocol header when the sender wrote one."""
    proxy = tcp_proxy_pb2.TcpProxy(
        stat_prefix=f"global_sidecar_tcp_{port}",
        cluster=TCP_PASSTHROUGH_CLUSTER,
        access_log=[
            accesslog_pb2.AccessLog(
                name="envoy.access_loggers.tcp_grpc",
                typed_config=_any(
                    als_pb2.TcpGrpcAccessLogConfig(common_config=_common_als(options))
                ),
            )
        ]
        if options.als is not None
        else [],
    )
    return listener_pb2.Listener(
        name=f"{options.listener_address}_{port}",
        address=_socket(options.listener_address, port),
        listener_filters=[
            listener_components_pb2.ListenerFilter(
                name="envoy.filters.listener.original_dst",
                typed_config=_any(original_dst_pb2.OriginalDst()),
            ),
            listener_components_pb2.ListenerFilter(
                name="envoy.filters.listener.proxy_protocol",
                typed_config=_any(
                    proxy_protocol_pb2.ProxyProtocol(allow_requests_without_proxy_protocol=True)
                ),
            ),
        ],
        filter_chains=[
            listener_components_pb2.FilterChain(
                filters=[
                    listener_components_pb2.Filter(
                        name="envoy.filters.network.tcp_proxy", typed_config=_any(proxy)
                    )
                ]
            )
        ],
    )


# --- routes ------------------------------------------------------------------------------------


def _route_configuration(mesh: MeshState, options: RenderOptions) -> route_pb2.RouteConfiguration:
    used: set[str] = set()
    vhosts = list(_dispatch_vhosts(options, used))
    vhosts.extend(_tunnel_vhosts(mesh, options, used))
    if options.upstream == "original_destination":
        vhosts.extend(_short_name_vhosts(mesh, options, used))
        vhosts.append(
            route_components_pb2.VirtualHost(
                name="original-destination",
                domains=["*"],
                routes=[*_catch_all_routes(options), _passthrough_route("original-destination")],
            )
        )
        return route_pb2.RouteConfiguration(name=options.route_config, virtual_hosts=vhosts)
    for service in mesh.services:
        for port in service.ports:
            domains = _unique(service_domains(service, port, options.cluster_domain), used)
            target = cluster_name(service, port, options.cluster_domain)
            if domains:
                vhosts.append(
                    route_components_pb2.VirtualHost(
                        name=f"{service.name}.{service.namespace}:{port.port}",
                        domains=domains,
                        routes=[_route_to(target)],
                    )
                )
    vhosts.extend(_short_name_vhosts(mesh, options, used))
    vhosts.extend(_entry_vhosts(mesh, options, used))
    vhosts.append(
        route_components_pb2.VirtualHost(
            name="unknown-host", domains=["*"], routes=list(_catch_all_routes(options))
        )
    )
    return route_pb2.RouteConfiguration(name=options.route_config, virtual_hosts=vhosts)


def _tunnel_vhosts(
    mesh: MeshState, options: RenderOptions, used: set[str]
) -> Iterable[route_components_pb2.VirtualHost]:
    """A caller's TCP connection to a steered Service address, tunnelled as an HTTP POST whose
    `:authority` is that address: terminated here, its bytes sent on to the Service."""
    if not options.tcp_steering:
        return
    for service, port, ip in tunnels.steered(mesh, options.own_services):
        fqdn = hosts.service_fqdn(service.name, service.namespace, options.cluster_domain)
        address = f"[{ip}]:{port.port}" if ":" in ip else f"{ip}:{port.port}"
        domains = _unique([address], used)
        if not domains:
            continue
        cluster = (
            _tunnel_cluster(service, port, options)
            if options.upstream == "original_destination"
            else cluster_name(service, port, options.cluster_domain)
        )
        connect = route_components_pb2.RouteAction.UpgradeConfig(
            upgrade_type="CONNECT",
            connect_config=route_components_pb2.RouteAction.UpgradeConfig.ConnectConfig(
                allow_post=True
            ),
        )
        yield route_components_pb2.VirtualHost(
            name=f"tcp:{fqdn}:{port.port}",
            domains=domains,
            routes=[
                route_components_pb2.Route(
                    name=f"tcp:{fqdn}:{port.port}",
                    match=route_components_pb2.RouteMatch(prefix="/"),
                    route=route_components_pb2.RouteAction(
                        cluster=cluster,
                        timeout=duration_pb2.Duration(),
                        host_rewrite_literal=f"{fqdn}:{port.port}",
                        upgrade_configs=[connect],
                    ),
                )
            ],
        )


def _tunnel_cluster(service: Service, port: ServicePort, options: RenderOptions) -> str:
    fqdn = hosts.service_fqdn(service.name, service.namespace, options.cluster_domain)
    return f"lazyload-tunnel|{port.port}||{fqdn}"


def _static_cluster(name: str, ip: str, port: int, options: RenderOptions) -> cluster_pb2.Cluster:
    return cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.STATIC,
        connect_timeout=_millis(options.connect_timeout_ms),
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name=name,
            endpoints=[
                endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[_lb_endpoint(ip, port)])
            ],
        ),
    )


def _dispatch_vhosts(
    options: RenderOptions, used: set[str]
) -> Iterable[route_components_pb2.VirtualHost]:
    """Dispatches by domain come first: their domains win over a Service's. `_GLOBAL_SIDECAR`
    ones mean "resolve here as usual", so they render nothing on the global-sidecar."""
    for dispatch in options.dispatches:
        if dispatch.domain_regex is not None or dispatch.to_global_sidecar:
            continue
        domains = _unique(dispatch.domains, used)
        if domains:
            yield route_components_pb2.VirtualHost(
                name=f"dispatch-{dispatch.name}",
                domains=domains,
                routes=[_dispatch_route(dispatch)],
            )


def _catch_all_routes(options: RenderOptions) -> Iterable[route_components_pb2.Route]:
    for dispatch in options.dispatches:
        if dispatch.domain_regex is not None and not dispatch.to_global_sidecar:
            yield _dispatch_route(dispatch, authority_regex=dispatch.domain_regex)
    if options.passthrough_by_default and options.upstream == "endpoints":
        yield _passthrough_route("passthrough")


def _dispatch_route(
    dispatch: Dispatch, *, authority_regex: str | None = None
) -> route_components_pb2.Route:
    if dispatch.to_passthrough:
        route = _passthrough_route(f"dispatch-{dispatch.name}")
    else:
        route = _route_to(dispatch.cluster)
        route.name = f"dispatch-{dispatch.name}"
    if authority_regex is not None:
        route.match.headers.append(
            route_components_pb2.HeaderMatcher(
                name=":authority",
                string_match=string_pb2.StringMatcher(
                    safe_regex=regex_pb2.RegexMatcher(regex=authority_regex)
                ),
            )
        )
    return route


def _passthrough_route(name: str) -> route_components_pb2.Route:
    """To the address in `Slime-Orig-Dest`; only when the header is there (Envoy would fall back
    to the connection's own address: this listener, a loop)."""
    match = route_components_pb2.RouteMatch(
        prefix="/",
        headers=[route_components_pb2.HeaderMatcher(name=ORIG_DEST_HEADER, present_match=True)],
    )
    return route_components_pb2.Route(
        name=name,
        match=match,
        route=route_components_pb2.RouteAction(
            cluster=PASSTHROUGH_CLUSTER, timeout=duration_pb2.Duration()
        ),
    )


def _entry_vhosts(
    mesh: MeshState, options: RenderOptions, used: set[str]
) -> Iterable[route_components_pb2.VirtualHost]:
    service_clusters = {
        cluster_name(s, p, options.cluster_domain) for s in mesh.services for p in s.ports
    }
    for entry, port, host, name in _entry_targets(mesh, service_clusters):
        domains = _unique(_with_port([host], port.port), used)
        if not domains:
            continue
        route = (
            _passthrough_route(f"{entry.key}:{host}:{port.port}")
            if name is None
            else _route_to(name)
        )
        yield route_components_pb2.VirtualHost(
            name=f"{entry.key}:{host}:{port.port}", domains=domains, routes=[route]
        )


def _short_name_vhosts(
    mesh: MeshState, options: RenderOptions, used: set[str]
) -> Iterable[route_components_pb2.VirtualHost]:
    """`name[:port]` is ambiguous across namespaces: the caller's namespace header picks one;
    without it, a name that only one namespace has still resolves."""
    owners: dict[tuple[str, int], list[tuple[str, str]]] = defaultdict(list)
    for service in mesh.services:
        for port in service.ports:
            target = cluster_name(service, port, options.cluster_domain)
            owners[(service.name, port.port)].append((service.namespace, target))
    route = _route_to if options.upstream == "endpoints" else _original_destination_of
    for (name, port), targets in sorted(owners.items()):
        domains = _unique(_with_port([name], port), used)
        if not domains:
            continue
        routes = [route(target, source_ns=ns) for ns, target in targets]
        if len(targets) == 1:
            routes.append(route(targets[0][1]))
        yield route_components_pb2.VirtualHost(
            name=f"{name}:{port}", domains=domains, routes=routes
        )


def _route_to(cluster: str, *, source_ns: str | None = None) -> route_components_pb2.Route:
    match = route_components_pb2.RouteMatch(prefix="/")
    if source_ns is not None:
        match.headers.append(
            route_components_pb2.HeaderMatcher(
                name=SOURCE_NS_HEADER, string_match=string_pb2.StringMatcher(exact=source_ns)
            )
        )
    return route_components_pb2.Route(
        name=cluster if source_ns is None else f"{cluster}@{source_ns}",
        match=match,
        # no route timeout: gRPC streams and long polls pass through (Slime's `timeout: 0s`)
        route=route_components_pb2.RouteAction(cluster=cluster, timeout=duration_pb2.Duration()),
    )


def _original_destination_of(
    cluster: str, *, source_ns: str | None = None
) -> route_components_pb2.Route:
    """To the original destination, the Host rewritten to the FQDN of `cluster`
    (`outbound|<port>||<fqdn>`), so that the istio-proxy routes it as that Service."""
    route = _passthrough_route(cluster if source_ns is None else f"{cluster}@{source_ns}")
    if source_ns is not None:
        route.match.headers.append(
            route_components_pb2.HeaderMatcher(
                name=SOURCE_NS_HEADER, string_match=string_pb2.StringMatcher(exact=source_ns)
            )
        )
    route.route.host_rewrite_literal = cluster.rsplit("|", 1)[1]
    return route


def _unique(domains: Iterable[str], used: set[str]) -> list[str]:
    """Envoy rejects a route configuration that repeats a domain: the first owner keeps it."""
    fresh = [d for d in dict.fromkeys(domains) if d not in used]
    used.update(fresh)
    return fresh


# --- clusters and endpoints -------------------------------------------------------------------


def _eds_cluster(name: str, port: ServicePort, options: RenderOptions) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(
            eds_config=_ads(), service_name=name
        ),
        connect_timeout=_millis(options.connect_timeout_ms),
        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
    )
    protocol = wormhole.protocol_of(port)
    if protocol in _HTTP2_PROTOCOLS:
        _use_http2(cluster)
    elif protocol not in _HTTP1_PROTOCOLS and not wormhole.is_tcp(port):
        _use_downstream_protocol(cluster)
    return cluster


def _use_downstream_protocol(cluster: cluster_pb2.Cluster) -> None:
    """Unnamed ports (Istio sniffs them): HTTP/1.1 upstream for HTTP/1.1, HTTP/2 for h2c/gRPC."""
    options = http_protocol_options_pb2.HttpProtocolOptions(
        use_downstream_protocol_config=http_protocol_options_pb2.HttpProtocolOptions.UseDownstreamHttpConfig(
            http_protocol_options=protocol_pb2.Http1ProtocolOptions(),
            http2_protocol_options=protocol_pb2.Http2ProtocolOptions(),
        )
    )
    cluster.typed_extension_protocol_options[_HTTP_OPTIONS].CopyFrom(_any(options))


def _dns_cluster(
    name: str, entry: ServiceEntry, port: ServicePort, host: str, options: RenderOptions
) -> cluster_pb2.Cluster:
    """A DNS ServiceEntry host: its endpoints' addresses, else the host, resolved by Envoy."""
    targets: dict[tuple[str, int], None] = {}
    for group in entry.endpoints:
        target_port = resolve_target_port(port, group)
        if target_port is not None:
            targets.update(dict.fromkeys((a, target_port) for a in group.addresses))
    if not entry.endpoints:
        target = port.target_port if isinstance(port.target_port, int) else port.port
        targets[(host, target)] = None
    cluster = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.STRICT_DNS,
        connect_timeout=_millis(options.connect_timeout_ms),
        dns_lookup_family=cluster_pb2.Cluster.V4_PREFERRED,
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name=name,
            endpoints=[
                endpoint_components_pb2.LocalityLbEndpoints(
                    lb_endpoints=[_lb_endpoint(a, p) for a, p in sorted(targets)]
                )
            ],
        ),
    )
    protocol = wormhole.protocol_of(port)
    if protocol in _HTTP2_PROTOCOLS:
        _use_http2(cluster)
    elif protocol not in _HTTP1_PROTOCOLS:
        _use_downstream_protocol(cluster)
    return cluster


def _passthrough_cluster(options: RenderOptions) -> cluster_pb2.Cluster:
    """ORIGINAL_DST by the `Slime-Orig-Dest` header (`ip:port`), upstream protocol as downstream."""
    cluster = cluster_pb2.Cluster(
        name=PASSTHROUGH_CLUSTER,
        type=cluster_pb2.Cluster.ORIGINAL_DST,
        lb_policy=cluster_pb2.Cluster.CLUSTER_PROVIDED,
        connect_timeout=_millis(options.connect_timeout_ms),
        original_dst_lb_config=cluster_pb2.Cluster.OriginalDstLbConfig(
            use_http_header=True, http_header_name=ORIG_DEST_HEADER
        ),
    )
    _use_downstream_protocol(cluster)
    return cluster


def _tcp_passthrough_cluster(options: RenderOptions) -> cluster_pb2.Cluster:
    return cluster_pb2.Cluster(
        name=TCP_PASSTHROUGH_CLUSTER,
        type=cluster_pb2.Cluster.ORIGINAL_DST,
        lb_policy=cluster_pb2.Cluster.CLUSTER_PROVIDED,
        connect_timeout=_millis(options.connect_timeout_ms),
    )


def _use_http2(cluster: cluster_pb2.Cluster) -> None:
    options = http_protocol_options_pb2.HttpProtocolOptions(
        explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
            http2_protocol_options=protocol_pb2.Http2ProtocolOptions()
        )
    )
    cluster.typed_extension_protocol_options[_HTTP_OPTIONS].CopyFrom(_any(options))


def _load_assignment(
    name: str, groups: Iterable[EndpointGroup], port: ServicePort
) -> endpoint_pb2.ClusterLoadAssignment:
    """Every ready address of `groups` on the target port of `port` (empty: no endpoints, 503)."""
    targets: dict[tuple[str, int], None] = {}
    for group in groups:
        target_port = resolve_target_port(port, group)
        if target_port is not None:
            targets.update(dict.fromkeys((address, target_port) for address in group.addresses))
    lb_endpoints = [_lb_endpoint(address, p) for address, p in sorted(targets)]
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=name,
        endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=lb_endpoints)]
        if lb_endpoints
        else [],
    )


def _lb_endpoint(address: str, port: int) -> endpoint_components_pb2.LbEndpoint:
    return endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(address=_socket(address, port))
    )


def _als_cluster(target: AlsTarget, options: RenderOptions) -> cluster_pb2.Cluster:
    static = hosts.is_ip_literal(target.host)
    cluster = cluster_pb2.Cluster(
        name=options.als_cluster,
        type=cluster_pb2.Cluster.STATIC if static else cluster_pb2.Cluster.STRICT_DNS,
        connect_timeout=_millis(options.connect_timeout_ms),
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name=options.als_cluster,
            endpoints=[
                endpoint_components_pb2.LocalityLbEndpoints(
                    lb_endpoints=[_lb_endpoint(target.host, target.port)]
                )
            ],
        ),
    )
    if not static:
        cluster.dns_lookup_family = cluster_pb2.Cluster.V4_PREFERRED
    _use_http2(cluster)
    if target.tls is not None:
        cluster.transport_socket.CopyFrom(_upstream_tls(target.tls))
    return cluster


def _upstream_tls(tls: AlsTls) -> base_pb2.TransportSocket:
    """TLS to accesslog-ingest: its certificate checked against `ca_file` (and `server_name`),
    the global-sidecar's own certificate presented (mutual TLS), ALPN h2 for gRPC."""
    validation = tls_common_pb2.CertificateValidationContext(
        trusted_ca=base_pb2.DataSource(filename=tls.ca_file)
    )
    if tls.server_name:
        validation.match_typed_subject_alt_names.append(
            tls_common_pb2.SubjectAltNameMatcher(
                san_type=tls_common_pb2.SubjectAltNameMatcher.DNS,
                matcher=string_pb2.StringMatcher(exact=tls.server_name),
            )
        )
    common = tls_pb2.CommonTlsContext(validation_context=validation, alpn_protocols=["h2"])
    if tls.cert_file:
        common.tls_certificates.append(
            tls_common_pb2.TlsCertificate(
                certificate_chain=base_pb2.DataSource(filename=tls.cert_file),
                private_key=base_pb2.DataSource(filename=tls.key_file),
            )
        )
    context = tls_pb2.UpstreamTlsContext(common_tls_context=common, sni=tls.server_name)
    return base_pb2.TransportSocket(name="envoy.transport_sockets.tls", typed_config=_any(context))


def _millis(ms: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)
