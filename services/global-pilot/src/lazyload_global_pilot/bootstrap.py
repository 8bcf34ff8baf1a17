"""The Envoy bootstrap of a global-sidecar that takes all its config from global-pilot over ADS.

`render_bootstrap(...)` returns the bootstrap as a plain dict (snake_case proto JSON); `dump(...)`
writes it as JSON, which Envoy reads from a `.json` (or `.yaml`) file. Everything but the xDS
cluster comes over ADS: listeners and clusters (LDS/CDS), then endpoints and routes (EDS/RDS).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lazyload_common import hosts

XDS_CLUSTER = "xds_cluster"
_HTTP_OPTIONS_TYPE = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def render_bootstrap(
    *,
    xds_host: str,
    xds_port: int,
    node_id: str = "global-sidecar",
    cluster: str = "global-sidecar",
    admin_host: str = "127.0.0.1",
    admin_port: int = 0,
    initial_fetch_timeout_s: float = 15.0,
    max_downstream_connections: int = 50_000,
) -> dict[str, Any]:
    """The bootstrap of a global-sidecar whose control plane is global-pilot at `xds_host:xds_port`.

    `node_id` and `cluster` identify the Envoy to global-pilot (snapshots are keyed by node id);
    the admin listens on `admin_host:admin_port` (0 = a free port).
    """
    ads = {
        "ads": {},
        "resource_api_version": "V3",
        "initial_fetch_timeout": f"{initial_fetch_timeout_s}s",
    }
    return {
        "node": {"id": node_id, "cluster": cluster},
        "admin": {"address": _socket(admin_host, admin_port)},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": True,
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
            },
            "cds_config": ads,
            "lds_config": ads,
        },
        "static_resources": {"clusters": [_xds_cluster(xds_host, xds_port)]},
        "overload_manager": {"resource_monitors": [_connection_limit(max_downstream_connections)]},
    }


def _connection_limit(limit: int) -> dict[str, Any]:
    return {
        "name": "envoy.resource_monitors.global_downstream_max_connections",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.resource_monitors."
            "downstream_connections.v3.DownstreamConnectionsConfig",
            "max_active_downstream_connections": limit,
        },
    }


def _xds_cluster(host: str, port: int) -> dict[str, Any]:
    static = hosts.is_ip_literal(host)
    cluster: dict[str, Any] = {
        "name": XDS_CLUSTER,
        "type": "STATIC" if static else "STRICT_DNS",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": _HTTP_OPTIONS_TYPE,
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": XDS_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket(host, port)}}]}],
        },
    }
    if not static:
        cluster["dns_lookup_family"] = "V4_PREFERRED"
    return cluster


def _socket(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def dump(bootstrap: dict[str, Any], path: Path) -> Path:
    """Write `bootstrap` to `path` as JSON (also valid YAML) and return the path."""
    path.write_text(json.dumps(bootstrap, indent=2))
    return path
