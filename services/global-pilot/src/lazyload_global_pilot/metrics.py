"""Prometheus metrics of global-pilot, fed by the ADS server hooks and the render loop."""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from prometheus_client import Counter, Gauge

from lazyload_global_pilot import server

STREAMS = Gauge("lazyload_global_pilot_xds_streams", "Open ADS streams.")
REQUESTS = Counter(
    "lazyload_global_pilot_xds_requests", "DiscoveryRequests received.", ["type", "outcome"]
)
RESPONSES = Counter("lazyload_global_pilot_xds_responses", "DiscoveryResponses sent.", ["type"])
RENDERS = Counter("lazyload_global_pilot_renders", "Renders of the mesh.", ["outcome"])
SERVICES = Gauge("lazyload_global_pilot_services", "Services in the last rendered mesh.")
WORMHOLE_PORTS = Gauge(
    "lazyload_global_pilot_wormhole_ports", "Wormhole ports rendered.", ["protocol"]
)
MESH_SIDE_APPLIES = Counter(
    "lazyload_global_pilot_mesh_side_applies", "Applies of the mesh-side resources.", ["outcome"]
)


def _short(type_url: str) -> str:
    return type_url.rsplit(".", 1)[-1]


def _on_request(_stream: int, request: server.Request) -> None:
    if request.HasField("error_detail"):
        outcome = "nack"
    elif request.response_nonce:
        outcome = "ack"
    else:
        outcome = "request"
    REQUESTS.labels(_short(request.type_url), outcome).inc()


def _on_response(_stream: int, response: server.Response) -> None:
    RESPONSES.labels(_short(response.type_url)).inc()


def _on_closed(_stream: int, _node: base_pb2.Node | None) -> None:
    STREAMS.dec()


def hooks() -> server.Hooks:
    """Server hooks that keep the metrics above."""
    return server.Hooks(
        on_stream_open=lambda _stream: STREAMS.inc(),
        on_stream_closed=_on_closed,
        on_request=_on_request,
        on_response=_on_response,
    )
