"""Snapshot: one immutable, versioned, self-consistent set of xDS resources.

A snapshot is what the cache hands to the server for a node. Its versions are hashes of its
content (one per type URL, and one over all of them), so rendering the same mesh twice gives the
same versions and the server pushes nothing. Check `consistent()` before a snapshot is set.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf.message import Message

from lazyload_global_pilot import resources
from lazyload_global_pilot.errors import InconsistentSnapshotError

_HCM_TYPE = "type.googleapis.com/" + hcm_pb2.HttpConnectionManager.DESCRIPTOR.full_name


@dataclass(frozen=True)
class Snapshot:
    """Resources by type URL then name; build it with `Snapshot.of(resources)`."""

    resources: Mapping[str, Mapping[str, Message]]
    versions: Mapping[str, str]
    version: str

    @classmethod
    def of(cls, content: Mapping[str, Mapping[str, Message]]) -> Snapshot:
        frozen = MappingProxyType(
            {t: MappingProxyType(dict(sorted(byname.items()))) for t, byname in content.items()}
        )
        versions = MappingProxyType({t: _hash_type(t, byname) for t, byname in frozen.items()})
        overall = hashlib.sha256("".join(f"{t}={v};" for t, v in sorted(versions.items())).encode())
        return cls(resources=frozen, versions=versions, version=overall.hexdigest()[:16])

    def version_of(self, type_url: str) -> str:
        """The version of one type (empty when the snapshot has no such type)."""
        return self.versions.get(type_url, "")

    def get(self, type_url: str, names: Iterable[str] | None = None) -> dict[str, Message]:
        """Resources of `type_url`; only those in `names` unless `names` is None (all)."""
        byname = self.resources.get(type_url, {})
        if names is None:
            return dict(byname)
        return {n: byname[n] for n in sorted(set(names)) if n in byname}

    def consistent(self) -> None:
        """Raise InconsistentSnapshotError unless every EDS and RDS resource is exactly the set the
        CDS clusters and LDS listeners reference."""
        problems = _compare(
            "ClusterLoadAssignment",
            _eds_names(self.get(resources.CLUSTER).values()),
            set(self.resources.get(resources.ENDPOINT, {})),
        ) + _compare(
            "RouteConfiguration",
            _rds_names(self.get(resources.LISTENER).values()),
            set(self.resources.get(resources.ROUTE, {})),
        )
        if problems:
            raise InconsistentSnapshotError(problems)


def _hash_type(type_url: str, byname: Mapping[str, Message]) -> str:
    digest = hashlib.sha256(type_url.encode())
    for name, message in byname.items():
        digest.update(name.encode() + b"\0")
        digest.update(message.SerializeToString(deterministic=True) + b"\0")
    return digest.hexdigest()[:16]


def _compare(kind: str, referenced: set[str], present: set[str]) -> list[str]:
    problems = [f"{kind} {n!r} is referenced but missing" for n in sorted(referenced - present)]
    problems += [f"{kind} {n!r} is not referenced" for n in sorted(present - referenced)]
    return problems


def _eds_names(clusters: Iterable[Message]) -> set[str]:
    names: set[str] = set()
    for cluster in clusters:
        if isinstance(cluster, cluster_pb2.Cluster) and cluster.type == cluster_pb2.Cluster.EDS:
            names.add(cluster.eds_cluster_config.service_name or cluster.name)
    return names


def _rds_names(listeners: Iterable[Message]) -> set[str]:
    names: set[str] = set()
    for listener in listeners:
        if not isinstance(listener, listener_pb2.Listener):
            continue
        for chain in listener.filter_chains:
            for network_filter in chain.filters:
                if network_filter.typed_config.type_url != _HCM_TYPE:
                    continue
                manager = hcm_pb2.HttpConnectionManager()
                network_filter.typed_config.Unpack(manager)
                if manager.HasField("rds"):
                    names.add(manager.rds.route_config_name)
    return names
