"""Scale-out (issue item 6, the reconciler half): 1 against 2 replicas of fence-reconciler on the
same load.

The storm load (`bench.storm`: E edges across F fences published in about one second) against a
stack without Envoy, twice, each time on a fresh stack: once with the stack's one
fence-reconciler, once with a second fence-reconciler process started next to it (same
environment, its own admin port), both on the same durable consumer (`fence-reconciler` on
LAZYLOAD_DEPS), so JetStream shares the messages between them. Measured per run: the time until
the reconciler's durable consumer is drained (nothing pending, nothing unacked) from the first
publish - the reconciler's throughput is edges / that time - and the time until every Sidecar is
right. The writer runs with a raised client-side rate limit (`raised_qps`, default 1000), so the
reconciler, not the writer's QPS, is what is measured. Result: the 2-replica / 1-replica ratios.
The Kubernetes API is the emulator or, with `kube="real"`, etcd + kube-apiserver +
kube-controller-manager (no audit log: writes are the services' own counters).
Ingest's half of item 6 belongs to bench/ingest.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

from bench.common import kube_label, plot_file, save_figure, stack_config
from bench.storm import kube_env, storm

DURABLE = ("LAZYLOAD_DEPS", "fence-reconciler")


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


async def _drained_at(endpoints: dict[str, Any], t0: float, stop: asyncio.Event) -> float | None:
    """Wall time (since t0) when the reconciler's durable consumer first had nothing left."""
    import nats
    from lazyload_common import natsauth

    nc = await nats.connect(**natsauth.endpoint_options(endpoints, natsauth.ADMIN))
    try:
        js = nc.jetstream()
        seen_work = False
        while not stop.is_set():
            try:
                info = await js.consumer_info(*DURABLE)
            except Exception:
                await asyncio.sleep(0.1)
                continue
            busy = (info.num_pending or 0) + (info.num_ack_pending or 0)
            delivered = (info.delivered and info.delivered.stream_seq) or 0
            seen_work = seen_work or busy > 0 or delivered > 0
            if seen_work and busy == 0:
                return time.time() - t0
            await asyncio.sleep(0.1)
        return None
    finally:
        await nc.close()


async def _once(
    config: dict[str, Any], workdir: Path, replicas: int, kube: str = "emulator"
) -> dict[str, Any]:
    from lazyload_cli.stack import Stack, bin_path

    fences, edges = int(config["fences"]), int(config["edges"])
    qps = float(config.get("raised_qps", 1000))
    stack_cfg, _ = stack_config(workdir / "stack", kube=kube, extra_env=kube_env(qps))
    with Stack(stack_cfg) as stack:
        c = stack.config
        for i in range(2, replicas + 1):
            name = f"fence-reconciler-{i}"
            port = _free_port(c.host)
            env = {**stack._service_env("fence-reconciler"), "LAZYLOAD_ADMIN__PORT": str(port)}
            stack.processes.spawn(name, [bin_path("lazyload-fence-reconciler")], env=env)
            await asyncio.to_thread(
                stack.processes.wait_http, name, f"http://{c.host}:{port}/readyz", timeout=120
            )
        stop = asyncio.Event()
        t0 = time.time()
        drained = asyncio.create_task(_drained_at(stack.endpoints, t0, stop))
        try:
            load = await storm(stack, fences, edges, timeout=float(config.get("timeout", 300)))
        finally:
            stop.set()
        drained_s = await drained
        stack.check_alive()
    # storm() registers the callers and waits 2 s before publishing: measure from its publish
    offset = load["register_s"] + 2.0
    drain_s = None if drained_s is None else max(drained_s - offset, 0.001)
    return {
        "replicas": replicas,
        "kube_qps": qps,
        "reconciler_drained_s": round(drain_s, 3) if drain_s else None,
        "reconciler_edges_per_s": round(load["edges"] / drain_s, 1) if drain_s else None,
        "all_right_s": load["all_right_s"],
        "partial": load.get("partial"),
        "servicefence_writes": load["writes"]["servicefence"]["writes"],
        "writes_source": load["writes"].get("source", "request log"),
        "servicefence_per_fence_per_window_max": load["writes"]["servicefence_by_writer"][
            "reconciler"
        ]["per_fence_per_window_max"],
        "publish_s": load["publish_s"],
    }


def _ratio(a: Any, b: Any) -> float | None:
    return round(a / b, 3) if a and b else None


async def _run(config: dict[str, Any], workdir: Path, kube: str = "emulator") -> dict[str, Any]:
    counts = [int(n) for n in config.get("replica_counts", (1, 2))]
    runs = {n: await _once(config, workdir / f"replicas-{n}", n, kube) for n in counts}
    one, two = runs.get(1), runs.get(2)
    qps = next(iter(runs.values()))["kube_qps"]
    return {
        "kube": kube,
        "fences": int(config["fences"]),
        "edges": int(config["edges"]),
        "runs": list(runs.values()),
        "ratio_throughput_2_to_1": _ratio(
            two and two["reconciler_edges_per_s"], one and one["reconciler_edges_per_s"]
        ),
        "ratio_all_right_2_to_1": _ratio(two and two["all_right_s"], one and one["all_right_s"]),
        "notes": [
            f"Storm load ({int(config['edges']):,} edges across {int(config['fences']):,} fences "
            "in about one second), a fresh stack without Envoy per run; 2 replicas = a second "
            "fence-reconciler process on the same durable consumer. Kubernetes API: "
            f"{kube_label(kube)}.",
            "Eager auto-fence off (`LAZYLOAD_FENCE__EAGER=false`): fences are made by the edges.",
            "Reconciler throughput = edges / time from the first publish until its durable "
            "consumer has nothing pending or unacked (polled every 0.1 s, so +-0.1 s).",
            f"Both runs with `LAZYLOAD_KUBE__QPS` {qps:.0f} (raised, not the default 50) so the "
            "writer's rate limit does not hide the reconciler.",
            "Reference (same run): the 1-replica run. On a 2-core machine shared with the "
            + ("API server, etcd, " if kube == "real" else "API emulator, ")
            + "NATS and the writer, a second replica competes for the same cores.",
        ],
    }


def run(config: dict[str, Any], workdir: Path, kube: str = "emulator") -> dict[str, Any]:
    return asyncio.run(_run(config, workdir, kube))


def _s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    out = [("scaleout", "edges / fences", f"{result['edges']:,} / {result['fences']:,}")]
    for r in result["runs"]:
        n = r["replicas"]
        eps = r["reconciler_edges_per_s"]
        out.append(
            (
                "scaleout",
                f"{n} reconciler replica(s): drained / all Sidecars right",
                f"{_s(r['reconciler_drained_s'])} / {_s(r['all_right_s'])} "
                f"({'n/a' if eps is None else f'{eps:,.0f}'} edges/s)",
            )
        )
        if r.get("partial"):
            out.append(("scaleout", f"{n} replica(s) PARTIAL", str(r["partial"])[:160]))
    out += [
        ("scaleout", "throughput 2 / 1 replicas", f"{result['ratio_throughput_2_to_1']}"),
        ("scaleout", "time to all right 2 / 1 replicas", f"{result['ratio_all_right_2_to_1']}"),
    ]
    return out


def plot(result: dict[str, Any], plots: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    fig, ax = plt.subplots(figsize=(6, 4))
    x = range(len(runs))
    ax.bar(
        [i - 0.2 for i in x],
        [r["reconciler_drained_s"] or 0 for r in runs],
        0.4,
        label="reconciler drained",
    )
    ax.bar([i + 0.2 for i in x], [r["all_right_s"] or 0 for r in runs], 0.4, label="all right")
    ax.set_xticks(list(x), [f"{r['replicas']} replica(s)" for r in runs])
    ax.set_ylabel("seconds from first publish")
    ax.set_title(
        f"Scale-out: {result['edges']:,} edges over {result['fences']:,} fences\n"
        f"({kube_label(result.get('kube', 'emulator'))})"
    )
    ax.legend()
    return save_figure(fig, plots, plot_file(result, "scaleout.png"))
