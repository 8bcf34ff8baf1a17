"""The mesh-side resources that route unknown hosts to the global-sidecar (pure, no I/O).

`render(ports, options)` returns the objects global-pilot keeps applied, as plain Kubernetes JSON:

- the global-sidecar `Service` (selector `app=<app_label>`), one port per wormhole port
  (`http-<P>` / `tcp-<P>`, `targetPort` = port), so every fenced sidecar has a route
  configuration named `"<P>"` for each HTTP wormhole port (it sees `mesh-operator/*`);
- the `to-global-sidecar` EnvoyFilter (networking.istio.io/v1alpha3). For each HTTP wormhole port
  P, on `SIDECAR_OUTBOUND` route configuration `"P"`: REMOVE the `allow_any` virtual host, MERGE
  the dispatch virtual hosts and `allow_all` (`*`): the regex dispatches, then every other host
  to `outbound|P||<global-sidecar fqdn>` with `Slime-Orig-Dest: %DOWNSTREAM_LOCAL_ADDRESS%`,
  `Slime-Source-Ns` (the caller's namespace) and `Lazyload-Source-Ip` (the calling app's address,
  `%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%`: behind the global-sidecar's own inbound istio-proxy
  the connection comes from 127.0.0.6, so this header names the caller, checked by
  accesslog-ingest against the namespace its mTLS certificate proves). The global-sidecar's own proxy (node metadata
  `SLIME_APP: LAZYLOAD_GLOBAL_SIDECAR`) gets those virtual hosts removed again and `*` to
  `PassthroughCluster`: it never sends traffic to itself. With `passthrough_by_default` (Slime's
  `passthroughByDefault`) the final `*` route goes to `PassthroughCluster` instead of the
  global-sidecar (only dispatches reach it); with a `revision` the filter carries `istio.io/rev`.

Modes: `cluster` - one Service in the global-sidecar namespace, the filter in the root namespace
(every namespace; caller namespace from the proxy's `POD_NAMESPACE`); `namespace` - a Service and
a filter per listed namespace (caller namespace = that namespace); `disabled` - nothing.
- with TCP steering (`tunnels`, see `tunnels.py`), in the same filter: per steered TCP port a
  filter chain ADDed to `virtualOutbound` (that port on the ClusterIPs that serve it) whose
  `tcp_proxy` tunnels the connection to `outbound|<first HTTP wormhole port>||<global-sidecar>`
  as an HTTP POST (`:authority` and `Slime-Orig-Dest` = the dialled address, `Slime-Source-Ns`,
  `Lazyload-Source-Ip`). The global-sidecar's own proxy gets, beside it, more specific chains
  (transport protocol `raw_buffer` / `tls`) to `PassthroughCluster`: a Service its proxy does not
  know yet is passed through, never tunnelled back to itself.
- the global-sidecar `DestinationRule` (per global-sidecar Service): `useClientProtocol`, so the
  mesh leg to the global-sidecar keeps the caller's protocol (gRPC/h2 first calls; Slime's
  `supportH2`).

`validate(obj)` checks an Istio object against Istio's schema (`lazyload_common.schemas`, shared
with sidecar-writer): no field unknown to it, no value it reads differently.
"""

from __future__ import annotations

from typing import Any, Literal

from lazyload_common import schemas
from pydantic import BaseModel, ConfigDict

from lazyload_global_pilot import dispatches as dispatching
from lazyload_global_pilot.dispatches import Dispatch
from lazyload_global_pilot.errors import InvalidResourceError
from lazyload_global_pilot.ports import PortSet
from lazyload_global_pilot.tunnels import TcpTunnels

RawObject = dict[str, Any]
FILTER_NAME = "to-global-sidecar"
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "lazyload-global-pilot"
ORIG_DEST = "Slime-Orig-Dest"
SOURCE_NS = "Slime-Source-Ns"
SOURCE_IP = "Lazyload-Source-Ip"
SLIME_APP = {"SLIME_APP": "LAZYLOAD_GLOBAL_SIDECAR"}
TCP_PROXY = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
VIRTUAL_OUTBOUND = "virtualOutbound"
REVISION_LABEL = "istio.io/rev"
CALLER_NAMESPACE = "%ENVIRONMENT(POD_NAMESPACE)%"


class MeshSideOptions(BaseModel):
    model_config = ConfigDict(frozen=True)
    mode: Literal["cluster", "namespace", "disabled"] = "cluster"
    root_namespace: str = "istio-system"
    sidecar_namespace: str = "mesh-operator"
    namespaces: tuple[str, ...] = ()
    service_name: str = "global-sidecar"
    app_label: str = "global-sidecar"
    cluster_domain: str = "cluster.local"
    dispatches: tuple[Dispatch, ...] = ()
    passthrough_by_default: bool = False
    revision: str = ""


def render(
    ports: PortSet, options: MeshSideOptions, tunnels: TcpTunnels | None = None
) -> list[RawObject]:
    """Every object of the current mode, Services first; `tunnels`: the TCP ports to steer."""
    if options.mode == "cluster":
        targets = [(options.sidecar_namespace, options.root_namespace, CALLER_NAMESPACE)]
    elif options.mode == "namespace":
        targets = [(ns, ns, ns) for ns in options.namespaces]
    else:
        targets = []
    services = [service(ports, ns, options) for ns, _, _ in targets if ports.all]
    rules = [destination_rule(ns, options) for ns, _, _ in targets if ports.http]
    filters = [
        envoy_filter(
            ports, sidecar_ns=gs, filter_ns=fns, caller_ns=caller, options=options, tunnels=tunnels
        )
        for gs, fns, caller in targets
        if ports.http
    ]
    return services + rules + filters


def _metadata(name: str, namespace: str, options: MeshSideOptions) -> RawObject:
    labels = {"app": options.app_label, MANAGED_BY: MANAGER}
    return {"name": name, "namespace": namespace, "labels": labels}


def service(ports: PortSet, namespace: str, options: MeshSideOptions) -> RawObject:
    """The global-sidecar Service of `namespace`: a port per wormhole port."""
    spec_ports = [
        {"name": f"{kind}-{p}", "port": p, "targetPort": p, "protocol": "TCP"}
        for p in ports.all
        for kind in ["tcp" if p in ports.tcp else "http"]
    ]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(options.service_name, namespace, options),
        "spec": {"selector": {"app": options.app_label}, "ports": spec_ports},
    }


def destination_rule(namespace: str, options: MeshSideOptions) -> RawObject:
    """`useClientProtocol` for the global-sidecar Service of `namespace` (Slime's `supportH2`):
    a caller's sidecar keeps the caller's protocol on the leg to the global-sidecar, so a gRPC
    (h2) first call stays h2 end to end instead of being downgraded to HTTP/1.1."""
    fqdn = f"{options.service_name}.{namespace}.svc.{options.cluster_domain}"
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "DestinationRule",
        "metadata": _metadata(options.service_name, namespace, options),
        "spec": {
            "host": fqdn,
            "trafficPolicy": {"connectionPool": {"http": {"useClientProtocol": True}}},
        },
    }


def envoy_filter(
    ports: PortSet,
    *,
    sidecar_ns: str,
    filter_ns: str,
    caller_ns: str,
    options: MeshSideOptions,
    tunnels: TcpTunnels | None = None,
) -> RawObject:
    """`to-global-sidecar` in `filter_ns`, sending unknown hosts (and, with `tunnels`, TCP
    connections to unknown Service addresses) to the global-sidecar of `sidecar_ns` with
    `Slime-Source-Ns: caller_ns`."""
    fqdn = f"{options.service_name}.{sidecar_ns}.svc.{options.cluster_domain}"
    patches: list[RawObject] = []
    for port in ports.http:
        target = _Target(cluster=f"outbound|{port}||{fqdn}", caller_ns=caller_ns)
        patches += _port_patches(port, target, options.dispatches, options.passthrough_by_default)
    if tunnels is not None and ports.http and not options.passthrough_by_default:
        target = _Target(cluster=f"outbound|{ports.http[0]}||{fqdn}", caller_ns=caller_ns)
        patches += _tcp_patches(tunnels, target)
    metadata = _metadata(FILTER_NAME, filter_ns, options)
    if options.revision:  # only that revision's istiod applies it (Slime's selfResourceRev)
        metadata["labels"][REVISION_LABEL] = options.revision
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": metadata,
        "spec": {"configPatches": patches},
    }


class _Target(BaseModel):
    cluster: str
    caller_ns: str


def _match(port: int, vhost: str | None = None, *, own: bool = False) -> RawObject:
    route_configuration: RawObject = {"name": str(port)}
    if vhost is not None:
        route_configuration["vhost"] = {"name": vhost}
    match: RawObject = {"context": "SIDECAR_OUTBOUND", "routeConfiguration": route_configuration}
    if own:
        match["proxy"] = {"metadata": dict(SLIME_APP)}
    return match


def _port_patches(
    port: int, target: _Target, dispatches: tuple[Dispatch, ...], passthrough: bool = False
) -> list[RawObject]:
    by_domain = [d for d in dispatches if d.domain_regex is None]
    by_regex = [d for d in dispatches if d.domain_regex is not None]
    vhosts = [
        {"name": d.name, "domains": list(d.domains), "routes": [_route(d.name, d.cluster, target)]}
        for d in by_domain
    ]
    catch_all = [
        _route(d.name, d.cluster, target, authority_regex=d.domain_regex) for d in by_regex
    ]
    default = dispatching.PASSTHROUGH if passthrough else dispatching.GLOBAL_SIDECAR
    catch_all.append(_route(FILTER_NAME, default, target))
    vhosts.append({"name": "allow_all", "domains": ["*"], "routes": catch_all})
    patches: list[RawObject] = [
        {
            "applyTo": "VIRTUAL_HOST",
            "match": _match(port, "allow_any"),
            "patch": {"operation": "REMOVE"},
        },
        {
            "applyTo": "ROUTE_CONFIGURATION",
            "match": _match(port),
            "patch": {"operation": "MERGE", "value": {"virtual_hosts": vhosts}},
        },
    ]
    # the global-sidecar's own proxy: undo the above (no loop), keep passthrough
    for name in ["allow_all", *(d.name for d in by_domain)]:
        patches.append(
            {
                "applyTo": "VIRTUAL_HOST",
                "match": _match(port, name, own=True),
                "patch": {"operation": "REMOVE"},
            }
        )
    patches.append(
        {
            "applyTo": "ROUTE_CONFIGURATION",
            "match": _match(port, own=True),
            "patch": {
                "operation": "MERGE",
                "value": {
                    "virtual_hosts": [
                        {
                            "name": "allow_any_new",
                            "domains": ["*"],
                            "routes": [_route("allow_any", dispatching.ISTIO_PASSTHROUGH, target)],
                        }
                    ]
                },
            },
        }
    )
    return patches


def _tcp_patches(tunnels: TcpTunnels, target: _Target) -> list[RawObject]:
    """Per steered TCP port: the tunnelling chain for every sidecar, and for the global-sidecar's
    own proxy two more specific chains that pass the connection through instead."""
    match: RawObject = {"context": "SIDECAR_OUTBOUND", "listener": {"name": VIRTUAL_OUTBOUND}}
    patches: list[RawObject] = []
    for tcp in tunnels.targets:
        chain_match: RawObject = {
            "destination_port": tcp.port,
            "prefix_ranges": [
                {"address_prefix": ip, "prefix_len": 128 if ":" in ip else 32}
                for ip in tcp.addresses
            ],
        }
        tunnel = {
            "hostname": "%DOWNSTREAM_LOCAL_ADDRESS%",
            "use_post": True,
            "headers_to_add": [
                {
                    "header": {"key": key, "value": value},
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                }
                for key, value in _tunnel_headers(target)
            ],
        }
        patches.append(
            {
                "applyTo": "FILTER_CHAIN",
                "match": match,
                "patch": {
                    "operation": "ADD",
                    "value": _tcp_chain(
                        f"lazyload-tcp-{tcp.port}",
                        chain_match,
                        {"cluster": target.cluster, "tunneling_config": tunnel},
                        f"lazyload_tcp_{tcp.port}",
                    ),
                },
            }
        )
        for transport in ("raw_buffer", "tls"):
            patches.append(
                {
                    "applyTo": "FILTER_CHAIN",
                    "match": {**match, "proxy": {"metadata": dict(SLIME_APP)}},
                    "patch": {
                        "operation": "ADD",
                        "value": _tcp_chain(
                            f"lazyload-tcp-{tcp.port}-{transport}-passthrough",
                            {**chain_match, "transport_protocol": transport},
                            {"cluster": dispatching.ISTIO_PASSTHROUGH},
                            f"lazyload_tcp_{tcp.port}_passthrough",
                        ),
                    },
                }
            )
    return patches


def _tunnel_headers(target: _Target) -> list[tuple[str, str]]:
    return [
        (ORIG_DEST, "%DOWNSTREAM_LOCAL_ADDRESS%"),
        (SOURCE_NS, target.caller_ns),
        (SOURCE_IP, "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"),
    ]


def _tcp_chain(name: str, match: RawObject, proxy: RawObject, stat_prefix: str) -> RawObject:
    return {
        "name": name,
        "filter_chain_match": match,
        "filters": [
            {
                "name": "envoy.filters.network.tcp_proxy",
                "typed_config": {"@type": TCP_PROXY, "stat_prefix": stat_prefix, **proxy},
            }
        ],
    }


def _route(
    name: str, cluster: str, target: _Target, *, authority_regex: str | None = None
) -> RawObject:
    match: RawObject = {"prefix": "/"}
    if authority_regex is not None:
        match["headers"] = [
            {"name": ":authority", "string_match": {"safe_regex": {"regex": authority_regex}}}
        ]
    route: RawObject = {"name": name, "match": match}
    if cluster == dispatching.GLOBAL_SIDECAR:
        route["route"] = {"cluster": target.cluster, "timeout": "0s"}
        route["request_headers_to_add"] = [
            _header(ORIG_DEST, "%DOWNSTREAM_LOCAL_ADDRESS%"),
            _header(SOURCE_NS, target.caller_ns),
            _header(SOURCE_IP, "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"),
        ]
    elif cluster == dispatching.PASSTHROUGH:
        route["route"] = {"cluster": dispatching.ISTIO_PASSTHROUGH, "timeout": "0s"}
    else:
        route["route"] = {"cluster": cluster, "timeout": "0s"}
    return route


def _header(key: str, value: str) -> RawObject:
    return {"header": {"key": key, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}


def warm_up() -> None:
    """Build the schema models now (blocking, seconds) rather than at the first apply."""
    schemas.warm_up("networking.istio.io/v1alpha3", "EnvoyFilter", "DestinationRule")


def validate(obj: RawObject) -> None:
    """Raise InvalidResourceError unless an Istio `obj` matches Istio's schema exactly (other
    API groups pass: the API server validates them)."""
    if not str(obj.get("apiVersion", "")).partition("/")[0].endswith(".istio.io"):
        return
    problems = schemas.problems(obj)
    if problems:
        raise InvalidResourceError(f"{obj.get('kind')} {_name(obj)}: {'; '.join(problems[:10])}")


def _name(obj: RawObject) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"
