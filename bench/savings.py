"""Savings (issue item 5, the front-page number).

A real Envoy is given over xDS (global-pilot's own rendering, snapshot, cache and ADS server, run
in-process) the clusters, endpoints and routes an unscoped sidecar gets in a mesh of N services,
against one given only what a fenced workload with 10 dependencies gets (its 10 dependencies plus
the always-visible istio-system and mesh-operator services, as its Sidecar says). For each: Envoy
RSS (psutil) once `cluster_manager.active_clusters` reached the count and the routes are applied,
Envoy's own heap (`/memory`), serialized xDS size and `/config_dump` size.
Reference measured in the same run: an Envoy given an empty mesh (only the listener).
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import percentile, rss_mb, save_figure

DEPENDENCIES = 10
ALWAYS_VISIBLE = (("istio-system", "istiod"), ("mesh-operator", "global-sidecar"))


def mesh_of(n: int, *, namespaces: int = 20, endpoints: int = 2) -> Any:
    """n Services (plus the always-visible ones) spread over namespaces, `endpoints` pods each."""
    from lazyload_global_pilot.mesh import (
        EndpointGroup,
        EndpointPort,
        MeshState,
        Service,
        ServicePort,
    )

    services = []
    for i in range(n):
        services.append((f"ns-{i % namespaces}", f"svc-{i}"))
    services.extend(ALWAYS_VISIBLE)
    out = []
    for index, (ns, name) in enumerate(services):
        addresses = tuple(
            f"10.{(index >> 8) & 255}.{index & 255}.{e + 1}" for e in range(endpoints)
        )
        out.append(
            Service(
                namespace=ns,
                name=name,
                cluster_ip=f"172.{16 + ((index >> 16) & 15)}.{(index >> 8) & 255}.{index & 255}",
                ports=(ServicePort(name="http", port=9080, target_port=9080),),
                endpoints=(
                    EndpointGroup(
                        addresses=addresses, ports=(EndpointPort(name="http", port=9080),)
                    ),
                ),
            )
        )
    return MeshState.of(out)


def fenced_view(mesh: Any, dependencies: int = DEPENDENCIES, seed: int = 7) -> Any:
    """What a fenced workload's Sidecar lets it see: `dependencies` services + always-visible."""
    from lazyload_global_pilot.mesh import MeshState

    rng = random.Random(seed)
    ordinary = [s for s in mesh.services if (s.namespace, s.name) not in ALWAYS_VISIBLE]
    chosen = rng.sample(ordinary, min(dependencies, len(ordinary)))
    visible = [s for s in mesh.services if (s.namespace, s.name) in ALWAYS_VISIBLE]
    return MeshState.of([*chosen, *visible])


async def _measure(mesh: Any, label: str, workdir: Path, listener_port: int) -> dict[str, Any]:
    from lazyload_global_pilot import bootstrap, rendering, resources, server
    from lazyload_global_pilot.cache import SnapshotCache
    from lazyload_global_pilot.snapshots import Snapshot
    from lazyload_testing.envoy import start_envoy

    t0 = time.perf_counter()
    content = rendering.render(
        mesh,
        rendering.RenderOptions(listener_address="127.0.0.1", listener_ports=(listener_port,)),
    )
    snapshot = Snapshot.of(content)
    render_s = time.perf_counter() - t0
    xds_bytes = {
        t.rsplit(".", 1)[-1]: sum(len(m.SerializeToString()) for m in byname.values())
        for t, byname in content.items()
    }
    cache = SnapshotCache()
    cache.set(snapshot)
    ads = server.AdsServer(cache)
    grpc_server, port = await server.start(ads, "127.0.0.1", 0)
    envoy = None
    try:
        t1 = time.perf_counter()
        envoy = await start_envoy(
            bootstrap.render_bootstrap(xds_host="127.0.0.1", xds_port=port, node_id=label),
            workdir / label,
            wait_ready=False,  # its admin is busy while it applies thousands of clusters
            timeout=120,
            log_level="warning",
        )
        want = len(content[resources.CLUSTER]) + 1  # + the static xds_cluster
        deadline = time.monotonic() + 180
        while True:
            stats = await _stats(envoy.admin_url)
            routes_ok = any(k.endswith("update_success") and v > 0 for k, v in stats.items())
            if stats.get("cluster_manager.active_clusters", 0) >= want and routes_ok:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{label}: Envoy has {stats}, wants {want} clusters")
            await asyncio.sleep(0.1)
        applied_s = time.perf_counter() - t1
        # let allocations settle: sample RSS until two readings 0.5 s apart agree within 1 %
        pid = envoy.process.pid
        samples: list[float] = []
        for _ in range(20):
            await asyncio.sleep(0.5)
            samples.append(rss_mb(pid) or 0.0)
            if len(samples) >= 3 and abs(samples[-1] - samples[-2]) <= 0.01 * samples[-1]:
                break
        async with httpx.AsyncClient(timeout=120) as client:
            memory = (await client.get(envoy.admin_url + "/memory")).json()
            dump = await client.get(envoy.admin_url + "/config_dump?include_eds")
        return {
            "label": label,
            "services": len(mesh.services),
            "clusters": len(content[resources.CLUSTER]),
            "rss_mb": round(samples[-1], 2),
            "rss_samples_mb": [round(s, 2) for s in samples],
            "heap_allocated_mb": round(int(memory["allocated"]) / 2**20, 2),
            "heap_size_mb": round(int(memory["heap_size"]) / 2**20, 2),
            "xds_bytes": xds_bytes,
            "xds_bytes_total": sum(xds_bytes.values()),
            "config_dump_bytes": len(dump.content),
            "render_s": round(render_s, 3),
            "applied_s": round(applied_s, 3),
            "xds_nacks": ads.stats.nacks,
        }
    finally:
        if envoy is not None:
            await envoy.stop()
        await grpc_server.stop(None)


async def _stats(admin_url: str) -> dict[str, int]:
    """The two stats we wait on; {} while Envoy's admin is too busy to answer."""
    query = r"?filter=cluster_manager\.active_clusters|rds\..*update_success"
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            body = (await client.get(admin_url + "/stats" + query)).text
    except httpx.HTTPError:
        return {}
    values = {}
    for line in body.splitlines():
        name, sep, value = line.partition(": ")
        if sep and value.strip().isdigit():
            values[name] = int(value)
    return values


async def _run(config: dict[str, Any], workdir: Path) -> dict[str, Any]:
    from lazyload_cli.ports import free_port

    sizes: list[int] = config["mesh_sizes"]
    reference = await _measure(mesh_of(0), "reference-empty", workdir, free_port("127.0.0.1"))
    by_size = []
    for n in sizes:
        mesh = mesh_of(n)
        unscoped = await _measure(mesh, f"unscoped-{n}", workdir, free_port("127.0.0.1"))
        fenced = await _measure(fenced_view(mesh), f"fenced-{n}", workdir, free_port("127.0.0.1"))
        by_size.append(
            {
                "mesh_services": n,
                "unscoped": unscoped,
                "fenced": fenced,
                "ratio_rss": round(fenced["rss_mb"] / unscoped["rss_mb"], 4),
                "ratio_heap": round(fenced["heap_allocated_mb"] / unscoped["heap_allocated_mb"], 4),
                "ratio_xds_bytes": round(
                    fenced["xds_bytes_total"] / unscoped["xds_bytes_total"], 5
                ),
                "ratio_config_dump": round(
                    fenced["config_dump_bytes"] / unscoped["config_dump_bytes"], 5
                ),
                "rss_saved_mb": round(unscoped["rss_mb"] - fenced["rss_mb"], 2),
                "rss_over_reference_unscoped_mb": round(
                    unscoped["rss_mb"] - reference["rss_mb"], 2
                ),
                "rss_over_reference_fenced_mb": round(fenced["rss_mb"] - reference["rss_mb"], 2),
                "kb_per_service_unscoped": round(
                    (unscoped["rss_mb"] - reference["rss_mb"]) * 1024 / max(n, 1), 2
                ),
            }
        )
    per_service = [s["kb_per_service_unscoped"] for s in by_size]
    return {
        "dependencies": DEPENDENCIES,
        "envoy_concurrency": 1,
        "endpoints_per_service": 2,
        "reference": reference,
        "by_size": by_size,
        "kb_per_service_median": percentile(per_service, 50),
        "notes": [
            "A real Envoy (concurrency 1) fed over ADS by global-pilot's rendering, snapshot, "
            "cache and server in-process: unscoped = every Service of the mesh (+ istio-system "
            "and mesh-operator), fenced = the 10 dependencies of one workload + those two.",
            "Each Service has one HTTP port and 2 endpoints. RSS once active_clusters reached "
            "the count and RDS was applied, after it stopped moving (psutil).",
            "Reference (same run): an Envoy given an empty mesh (listener only).",
        ],
    }


def run(config: dict[str, Any], workdir: Path) -> dict[str, Any]:
    return asyncio.run(_run(config, workdir))


def rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    out = [
        ("savings", "reference Envoy RSS (empty mesh)", f"{result['reference']['rss_mb']:.1f} MB")
    ]
    for s in result["by_size"]:
        n, u, f = s["mesh_services"], s["unscoped"], s["fenced"]
        out += [
            (
                "savings",
                f"{n} svc: RSS unscoped / fenced",
                f"{u['rss_mb']:.1f} / {f['rss_mb']:.1f} MB",
            ),
            ("savings", f"{n} svc: RSS ratio fenced/unscoped", f"{s['ratio_rss']:.3f}"),
            (
                "savings",
                f"{n} svc: xDS bytes unscoped / fenced",
                f"{u['xds_bytes_total']:,} / {f['xds_bytes_total']:,} ({s['ratio_xds_bytes']:.4f})",
            ),
            (
                "savings",
                f"{n} svc: config_dump unscoped / fenced",
                f"{u['config_dump_bytes']:,} / {f['config_dump_bytes']:,} "
                f"({s['ratio_config_dump']:.4f})",
            ),
            (
                "savings",
                f"{n} svc: RSS per service (unscoped)",
                f"{s['kb_per_service_unscoped']:.1f} KB",
            ),
        ]
    return out


def plot(result: dict[str, Any], plots: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [s["mesh_services"] for s in result["by_size"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(
        sizes, [s["unscoped"]["rss_mb"] for s in result["by_size"]], "o-", label="unscoped sidecar"
    )
    ax.plot(
        sizes, [s["fenced"]["rss_mb"] for s in result["by_size"]], "s-", label="fenced (10 deps)"
    )
    ax.axhline(
        result["reference"]["rss_mb"], color="grey", ls="--", label="empty Envoy (reference)"
    )
    ax.set_xlabel("services in the mesh")
    ax.set_ylabel("Envoy RSS (MB)")
    ax.set_title("Sidecar Envoy memory: unscoped vs fenced")
    ax.legend()
    ax.grid(alpha=0.3)
    return save_figure(fig, plots, "savings_rss.png")
