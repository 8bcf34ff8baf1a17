"""Savings in a real mesh (issue 14): a real istio-proxy (pilot-agent + Envoy, config from a real
istiod) in a mesh of N services, unfenced (the reference) vs fenced with 10 dependencies by a
Sidecar rendered by sidecar-writer's own `rendering.render` (what lazyload writes).

The mesh's services are ServiceEntries (one object each, hosts `svc-<i>.<ns>.mesh.bench`, port
`http` 80, two STATIC endpoints on unused addresses of the rig's range), spread over 10 namespaces:
on the rig istiod takes them faster than Services + EndpointSlices (two objects each, and a
ClusterIP to allocate: in a scratch run 1,000 of each were created in 4.7 s against 6.9 s, and a
new sidecar held all 2,000 clusters 7.2 s after its start). No traffic is sent: only the config
matters, so no other pod is in the mesh and istiod's metrics are the probe's alone.

Per mesh size and mode, one probe pod (its Services' ports: `http` 80) is started and measured:
its time from start to ready (initial config ACKed), its Envoy's RSS (VmRSS of the `envoy`
process, /proc), `/memory`'s allocated heap, `/config_dump` bytes and the clusters it holds; then
istiod's push time for it: `triggers` changes to one of the fence's 10 dependencies (its port
renamed: a full push), each timed from the write until istiod's `/debug/syncz` shows every pushed
type ACKed, with istiod's `pilot_xds_push_time`, `pilot_proxy_convergence_time` and
`pilot_xds_config_size_bytes` over those pushes; and whether a change to a service outside the
fence is pushed to the proxy at all. Since istiod pushes a one-service change incrementally
(delta xDS: only that cluster), `triggers` mesh-wide changes are timed the same way too: the
root-namespace PeerAuthentication flipped between PERMISSIVE and UNSET (same behaviour), after
which istiod regenerates and pushes every cluster the proxy holds.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from lazyload_common.kube import KubeNotFound

from bench import mesh_rig
from bench.common import save_figure

PROBE_NS = "bench-probe"
NAMESPACES = 10
SERVICE_ENTRIES = "/apis/networking.istio.io/v1/namespaces/{ns}/serviceentries"
POLL_S = 0.02
_renames = iter(range(1, 1_000_000))  # every rename a new port name: a real change


def _ns(i: int) -> str:
    return f"bench-mesh-{i % NAMESPACES}"


def _host(i: int) -> str:
    return f"svc-{i}.{_ns(i)}.mesh.bench"


def _entry(i: int, addresses: list[str], port_name: str = "http") -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": f"svc-{i}"},
        "spec": {
            "hosts": [_host(i)],
            "location": "MESH_INTERNAL",
            "resolution": "STATIC",
            "ports": [{"name": port_name, "number": 80, "protocol": "HTTP"}],
            "endpoints": [{"address": a} for a in addresses],
        },
    }


def _load(mesh: Any, start: int, stop: int, addresses: list[str]) -> float:
    from concurrent.futures import ThreadPoolExecutor

    for k in range(NAMESPACES):
        mesh_rig.ensure_namespace(mesh, _ns(k))

    def create(i: int) -> None:
        mesh.api.create(SERVICE_ENTRIES.format(ns=_ns(i)), _entry(i, addresses))

    t0 = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(start, stop)))
    return time.perf_counter() - t0


def _pilot_services(mesh: Any) -> float:
    return sum(
        v for k, v in mesh_rig.istiod_metrics(mesh).items() if k.startswith("pilot_services{")
    )


def _fence_sidecar(name: str, dependencies: int) -> dict[str, Any]:
    from lazyload_common import events
    from lazyload_sidecar_writer import rendering
    from lazyload_sidecar_writer.settings import WriterSettings

    hosts = sorted(_host(i) for i in range(dependencies))
    event = events.FenceChanged(
        namespace=PROBE_NS,
        name=name,
        revision=1,
        workload_selector={"app": name},
        hosts=hosts,
        added=hosts,
    )
    return rendering.render(event, WriterSettings())


def _rename_port(mesh: Any, i: int) -> None:
    k = next(_renames)
    mesh.api.merge_patch(
        f"{SERVICE_ENTRIES.format(ns=_ns(i))}/svc-{i}",
        {"spec": {"ports": [{"name": f"http-{k}", "number": 80, "protocol": "HTTP"}]}},
    )


def _mesh_wide_change(mesh: Any) -> None:
    """A change every proxy depends on: the mesh-wide PeerAuthentication (root namespace) flips
    between PERMISSIVE and UNSET (the same behaviour; istiod regenerates every cluster)."""
    path = "/apis/security.istio.io/v1/namespaces/istio-system/peerauthentications"
    mode = "PERMISSIVE" if next(_renames) % 2 else "UNSET"
    body = {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": "default"},
        "spec": {"mtls": {"mode": mode}},
    }
    try:
        mesh.api.merge_patch(f"{path}/default", {"spec": body["spec"]})
    except KubeNotFound:
        mesh.api.create(path, body)


def _push_time(mesh: Any, proxy: str, change: Any, timeout: float = 20.0) -> dict[str, Any]:
    """Time from `change()` until every xDS type istiod pushes to `proxy` for it is ACKed; a type
    counts as pushed when its `sent` nonce changed (1 s of quiet with all in sync ends the wait)."""
    before = {t: r.get("sent") for t, r in mesh_rig.syncz(mesh).get(proxy, {}).items()}
    t0 = time.perf_counter()
    change()
    acked: dict[str, float] = {}
    deadline = t0 + timeout
    while time.perf_counter() < deadline:
        resources = mesh_rig.syncz(mesh).get(proxy, {})
        now = time.perf_counter()
        for kind, r in resources.items():
            if r.get("sent") != before.get(kind) and r.get("sent") == r.get("acked"):
                acked.setdefault(kind.rsplit(".", 1)[-1], now - t0)
        if acked and mesh_rig.in_sync(resources) and now - t0 - max(acked.values()) > 1.0:
            break
        time.sleep(POLL_S)
    return {"pushed_s": max(acked.values()) if acked else None, "types": acked}


def _measure(
    mesh: Any, size: int, mode: str, dependencies: int, triggers: int, out_of_scope: int
) -> dict[str, Any]:
    name = f"probe-{mode}-{size}"
    if mode == "fenced":
        sidecar = _fence_sidecar(name, dependencies)
        mesh.api.create(f"/apis/networking.istio.io/v1/namespaces/{PROBE_NS}/sidecars", sidecar)
    t0 = time.perf_counter()
    probe = mesh.add_workload(PROBE_NS, name, {"http": 80}, timeout=300)
    startup = time.perf_counter() - t0
    proxy = f"{name}.{PROBE_NS}"
    try:
        probe.wait_synced(timeout=120)
        time.sleep(3)  # let the allocator settle after the initial config
        pid = mesh_rig.envoy_pid(probe)
        memory = json.loads(probe.admin("/memory"))
        result: dict[str, Any] = {
            "probe": proxy,
            "startup_to_ready_s": round(startup, 3),
            "rss_mb": round(mesh_rig.rss_mb(pid), 1),
            "heap_allocated_mb": round(int(memory["allocated"]) / 2**20, 1),
            "config_dump_bytes": len(probe.admin("/config_dump").encode()),
        }
        clusters = probe.clusters()
        result["clusters"] = len(clusters)
        result["outbound_clusters"] = sum(1 for c in clusters if c.startswith("outbound|"))
        metrics_before = mesh_rig.istiod_metrics(mesh)
        pushes = [
            _push_time(mesh, proxy, lambda k=k: _rename_port(mesh, k % dependencies))
            for k in range(triggers)
        ]
        metrics_after = mesh_rig.istiod_metrics(mesh)
        wide = [_push_time(mesh, proxy, lambda: _mesh_wide_change(mesh)) for _ in range(triggers)]
        metrics_wide = mesh_rig.istiod_metrics(mesh)
        wide_times = [p["pushed_s"] for p in wide if p["pushed_s"] is not None]
        result["mesh_wide_push_s"] = [round(t, 4) for t in wide_times]
        result["mesh_wide_push_median_s"] = statistics.median(wide_times) if wide_times else None
        result["istiod_mesh_wide"] = {
            metric: mesh_rig.histogram_delta(metrics_after, metrics_wide, metric)
            for metric in (
                "pilot_xds_push_time",
                "pilot_proxy_convergence_time",
                "pilot_xds_config_size_bytes",
            )
        }
        sizes = result["istiod_mesh_wide"]["pilot_xds_config_size_bytes"].values()
        result["mesh_wide_push_bytes"] = round(sum(v["mean_s"] for v in sizes))  # a sum: bytes
        times = [p["pushed_s"] for p in pushes if p["pushed_s"] is not None]
        result["push_s"] = [round(t, 4) for t in times]
        result["push_median_s"] = statistics.median(times) if times else None
        result["push_types"] = pushes[-1]["types"] if pushes else {}
        result["istiod"] = {
            "pilot_xds_push_time": mesh_rig.histogram_delta(
                metrics_before, metrics_after, "pilot_xds_push_time"
            ),
            "pilot_proxy_convergence_time": mesh_rig.histogram_delta(
                metrics_before, metrics_after, "pilot_proxy_convergence_time"
            ),
            "pilot_xds_config_size_bytes": mesh_rig.histogram_delta(
                metrics_before, metrics_after, "pilot_xds_config_size_bytes"
            ),
        }
        outside = _push_time(mesh, proxy, lambda: _rename_port(mesh, out_of_scope), timeout=3.0)
        result["pushed_for_change_outside_fence"] = outside["pushed_s"] is not None
        return result
    finally:
        mesh.remove_workload(probe)


def run(config: dict[str, Any], workdir: Path) -> dict[str, Any]:
    sizes = sorted(int(s) for s in config["mesh_sizes"])
    dependencies = int(config.get("dependencies", 10))
    triggers = int(config.get("triggers", 5))
    by_size = []
    with mesh_rig.istio_rig(workdir) as mesh:
        mesh_rig.ensure_namespace(mesh, PROBE_NS)
        base = mesh.network.unused_address().rsplit(".", 1)[0]
        addresses = [f"{base}.251", f"{base}.252"]  # no pod there: nothing is sent
        loaded = 0
        for size in sizes:
            load_s = _load(mesh, loaded, size, addresses)
            created = size - loaded
            loaded = size
            t0 = time.perf_counter()
            mesh_rig.wait(
                lambda s=size: _pilot_services(mesh) >= s, f"istiod knows {size} services", 300
            )
            known_s = time.perf_counter() - t0
            entry: dict[str, Any] = {
                "mesh_services": size,
                "created": created,
                "create_s": round(load_s, 2),
                "create_per_s": round(created / load_s, 1) if load_s else None,
                "istiod_caught_up_s": round(known_s, 2),
            }
            for mode in ("unfenced", "fenced"):
                entry[mode] = _measure(mesh, size, mode, dependencies, triggers, size - 1)
            u, f = entry["unfenced"], entry["fenced"]
            entry["ratio_rss"] = f["rss_mb"] / u["rss_mb"]
            entry["ratio_config_dump"] = f["config_dump_bytes"] / u["config_dump_bytes"]
            entry["ratio_clusters"] = f["clusters"] / u["clusters"]
            entry["ratio_push"] = (
                f["push_median_s"] / u["push_median_s"]
                if f["push_median_s"] and u["push_median_s"]
                else None
            )
            entry["ratio_mesh_wide_push"] = (
                f["mesh_wide_push_median_s"] / u["mesh_wide_push_median_s"]
                if f["mesh_wide_push_median_s"] and u["mesh_wide_push_median_s"]
                else None
            )
            entry["ratio_startup"] = f["startup_to_ready_s"] / u["startup_to_ready_s"]
            by_size.append(entry)
            print(f"mesh_savings: {size} services: {json.dumps(entry)[:600]}", flush=True)
    return {
        "kube": "real",
        "services_as": "ServiceEntry",
        "dependencies": dependencies,
        "triggers": triggers,
        "by_size": by_size,
        "reference": "unfenced",
        "notes": [
            "A real istio-proxy (pilot-agent + Envoy, config from a real istiod on a real "
            "kube-apiserver) in a mesh of N services (ServiceEntries: fewer API objects than "
            "Services + EndpointSlices, and faster for istiod on the rig), unfenced (the "
            "reference) vs fenced by the Sidecar sidecar-writer renders for 10 dependencies. "
            "RSS = VmRSS of its envoy process; push = a port rename of one dependency (a full "
            "push), from the write to istiod's /debug/syncz showing every pushed type ACKed "
            f"(median of {triggers}), with istiod's own push metrics over the same pushes; "
            "mesh-wide push = the root PeerAuthentication flipped PERMISSIVE <-> UNSET (istiod "
            "regenerates every cluster of the proxy), timed the same way.",
        ],
    }


def rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    name, out = "mesh_savings", []
    for s in result["by_size"]:
        n, u, f = s["mesh_services"], s["unfenced"], s["fenced"]
        push = s["ratio_push"]
        out += [
            (
                name,
                f"{n} svc: istio-proxy RSS unfenced / fenced",
                f"{u['rss_mb']:.1f} / {f['rss_mb']:.1f} MB ({s['ratio_rss']:.3f}x)",
            ),
            (
                name,
                f"{n} svc: config_dump unfenced / fenced",
                f"{u['config_dump_bytes']:,} / {f['config_dump_bytes']:,} B "
                f"({s['ratio_config_dump']:.4f}x)",
            ),
            (
                name,
                f"{n} svc: clusters unfenced / fenced",
                f"{u['clusters']:,} / {f['clusters']:,} ({s['ratio_clusters']:.4f}x)",
            ),
            (
                name,
                f"{n} svc: one dependency changed, pushed (median) unfenced / fenced",
                f"{mesh_rig.ms(u['push_median_s'])} / {mesh_rig.ms(f['push_median_s'])}"
                + ("" if push is None else f" ({push:.3f}x)"),
            ),
            (
                name,
                f"{n} svc: mesh-wide change pushed (median) unfenced / fenced",
                f"{mesh_rig.ms(u['mesh_wide_push_median_s'])} / "
                f"{mesh_rig.ms(f['mesh_wide_push_median_s'])}"
                + (
                    ""
                    if s["ratio_mesh_wide_push"] is None
                    else f" ({s['ratio_mesh_wide_push']:.3f}x)"
                ),
            ),
            (
                name,
                f"{n} svc: bytes istiod pushed per mesh-wide change unfenced / fenced",
                f"{u['mesh_wide_push_bytes']:,} / {f['mesh_wide_push_bytes']:,} B",
            ),
            (
                name,
                f"{n} svc: start -> ready unfenced / fenced",
                f"{u['startup_to_ready_s']:.1f} / {f['startup_to_ready_s']:.1f} s "
                f"({s['ratio_startup']:.2f}x)",
            ),
            (
                name,
                f"{n} svc: pushed for a change outside the fence: unfenced / fenced",
                f"{'yes' if u['pushed_for_change_outside_fence'] else 'no'} / "
                f"{'yes' if f['pushed_for_change_outside_fence'] else 'no'}",
            ),
        ]
    return out


def plot(result: dict[str, Any], plots: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [s["mesh_services"] for s in result["by_size"]]
    fig, (rss, push) = plt.subplots(1, 2, figsize=(10, 4))
    for mode in ("unfenced", "fenced"):
        rss.plot(sizes, [s[mode]["rss_mb"] for s in result["by_size"]], marker="o", label=mode)
        for key, style, what in (
            ("push_median_s", "-", "one dependency"),
            ("mesh_wide_push_median_s", "--", "mesh-wide"),
        ):
            push.plot(
                sizes,
                [(s[mode].get(key) or 0) * 1000 for s in result["by_size"]],
                marker="o",
                ls=style,
                label=f"{mode}: {what}",
            )
    rss.set_xlabel("services in the mesh")
    rss.set_ylabel("istio-proxy Envoy RSS (MB)")
    push.set_xlabel("services in the mesh")
    push.set_ylabel("istiod push -> ACK (ms, median)")
    for ax in (rss, push):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle("Real istio-proxy: unfenced vs fenced (10 dependencies)")
    return save_figure(fig, plots, "mesh_savings.png")
