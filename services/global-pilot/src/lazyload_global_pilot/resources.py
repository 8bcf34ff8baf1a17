"""xDS type URLs and the small helpers the snapshot and the server share.

The push order is the one Envoy needs to make before it breaks: clusters before their endpoints,
listeners before their routes, and clusters before the listeners that route to them.
"""

from __future__ import annotations

from collections.abc import Mapping

from google.protobuf.message import Message

_PREFIX = "type.googleapis.com/"
CLUSTER = _PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT = _PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = _PREFIX + "envoy.config.listener.v3.Listener"
ROUTE = _PREFIX + "envoy.config.route.v3.RouteConfiguration"

PUSH_ORDER: tuple[str, ...] = (CLUSTER, ENDPOINT, LISTENER, ROUTE)
WILDCARD_TYPES = frozenset({CLUSTER, LISTENER})
"""Types whose empty `resource_names` means "everything" (state-of-the-world LDS/CDS)."""

Resources = Mapping[str, Mapping[str, Message]]
"""Resources by type URL, then by resource name."""


def push_rank(type_url: str) -> tuple[int, str]:
    """Sort key of a type URL in push order; unknown types go last, alphabetically."""
    try:
        return (PUSH_ORDER.index(type_url), type_url)
    except ValueError:
        return (len(PUSH_ORDER), type_url)
