"""First calls in a real mesh (issue 14): many first-ever calls, each to a dependency its caller
has never called, through the callers' real istio-proxies and the global-sidecar; failures counted
(goal 0) with their reasons; throughput and latency against direct calls measured in the same run.

The rig of `lazyload_testing.mesh` with lazyload in it (`LazyloadInMesh`). `callers` fenced
caller pods and `calls / callers` callee Services (EndpointSlices on a few shared echo pods); every
(caller, callee) pair is called once, in a shuffled order, by `concurrency` parallel workers, each
call a new HTTP/1.1 connection made by the caller pod's app (its sidecar intercepts it). While the
calls run lazyload learns them, so the callers' Sidecars grow and istiod pushes to them throughout.

Reference (same run, same workers): `direct_calls` of those pairs called again once lazyload has
learned them and the callers' sidecars hold their clusters, so they go direct. Latency is measured
around each call by the benchmark (the pod's control socket included, the same for both).
"""

from __future__ import annotations

import collections
import json
import math
import random
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import mesh_rig
from bench.common import percentile, save_figure

CALLERS_NS = "bench-first"
CALLEES_NS = "bench-first-deps"
ECHO_NS = "bench-first-echo"


def _call(caller: Any, host: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        status, body = caller.http_get(f"http://{host}/", timeout=15)
    except Exception as e:  # counted with its reason
        return {"ok": False, "s": time.perf_counter() - t0, "reason": _reason(str(e))}
    elapsed = time.perf_counter() - t0
    if status != 200:
        return {"ok": False, "s": elapsed, "reason": f"HTTP {status}: {_reason(body[:120])}"}
    via = "slime-orig-dest" in json.loads(body).get("headers", {})
    return {"ok": True, "s": elapsed, "via_global_sidecar": via}


def _reason(text: str) -> str:
    """A failure's text without what differs per call (names, addresses, numbers)."""
    text = re.sub(r"caller-\d+|dep-\d+|\d+\.\d+\.\d+\.\d+(:\d+)?", "<x>", text)
    return re.sub(r"\d+", "N", text)[:160]


def _wait_learned(watch: mesh_rig.SidecarWatch, expected: set[tuple[str, str]]) -> None:
    """Until every pair is in its caller's Sidecar, or none was added for 30 s."""
    count, since = -1, time.monotonic()
    while not expected <= watch.seen.keys():
        now = len(expected & watch.seen.keys())
        if now != count:
            count, since = now, time.monotonic()
        elif time.monotonic() - since > 30:
            return
        time.sleep(1.0)


def _phase(pairs: list[tuple[Any, str]], concurrency: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda p: _call(*p), pairs))
    wall = time.perf_counter() - t0
    latencies = [r["s"] for r in results if r["ok"]]
    return {
        "calls": len(results),
        "ok": len(latencies),
        "failures": len(results) - len(latencies),
        "failure_reasons": dict(
            collections.Counter(r["reason"] for r in results if not r["ok"]).most_common(10)
        ),
        "via_global_sidecar": sum(1 for r in results if r.get("via_global_sidecar")),
        "wall_s": round(wall, 2),
        "calls_per_s": round(len(results) / wall, 1) if wall else None,
        **{f"p{q}_s": percentile(latencies, q) for q in (50, 95, 99)},
        "max_s": max(latencies) if latencies else None,
    }


def run(config: dict[str, Any], workdir: Path, mesh: Any = None) -> dict[str, Any]:
    """`mesh`: a running rig to use (a test's `istio_mesh`), else one of its own."""
    n_calls = int(config["calls"])
    n_callers = int(config.get("callers", 4))
    n_echo = int(config.get("echo_pods", 2))
    concurrency = int(config.get("concurrency", 8))
    n_direct = min(n_calls, int(config.get("direct_calls", 2000)))
    n_callees = math.ceil(n_calls / n_callers)
    rng = random.Random(int(config.get("seed", 14)))
    names = [f"dep-{i}" for i in range(n_callees)]
    with mesh_rig.call_rig(
        workdir,
        namespaces=(CALLERS_NS, CALLEES_NS, ECHO_NS),
        callees=names,
        callers=n_callers,
        echo_pods=n_echo,
        global_sidecar_timeout=600,
        mesh=mesh,
    ) as rig:
        mesh, stack, callers, hosts = rig.mesh, rig.stack, rig.callers, rig.hosts
        create_s, gs_ready_s = rig.create_s, rig.global_sidecar_ready_s
        pairs = [(c, h) for h in hosts for c in callers][:n_calls]
        rng.shuffle(pairs)
        with mesh_rig.SidecarWatch(mesh, CALLERS_NS) as watch:
            first = _phase(pairs, concurrency)
            print(f"first_calls: first calls {json.dumps(first)}", flush=True)
            t_end = time.perf_counter()
            expected = {(c.name, h) for c, h in pairs}
            _wait_learned(watch, expected)
            learned = len(expected & watch.seen.keys())
            learned_s = time.perf_counter() - t_end
        known = [p for p in pairs if (p[0].name, p[1]) in watch.seen]
        direct_pairs = rng.sample(known, min(n_direct, len(known)))
        t1 = time.perf_counter()
        for caller in callers:
            wanted = {
                f"outbound|{mesh_rig.CALLEE_PORT}||{h}" for c, h in direct_pairs if c is caller
            }
            try:
                mesh_rig.wait(
                    lambda c=caller, w=wanted: w <= set(c.clusters()),
                    f"{caller.name} holds its learned clusters",
                    600,
                    1.0,
                )
                caller.wait_synced(timeout=120)
            except TimeoutError:
                pass
        pushed_s = time.perf_counter() - t1
        direct = _phase(direct_pairs, concurrency)
        print(f"first_calls: direct calls {json.dumps(direct)}", flush=True)
        stack.check_alive()
    return _result(
        config, first, direct, n_callers, n_callees, n_echo, concurrency, learned,
        len(pairs), learned_s, pushed_s, create_s, gs_ready_s,
    )  # fmt: skip


def _result(
    config: dict[str, Any],
    first: dict[str, Any],
    direct: dict[str, Any],
    n_callers: int,
    n_callees: int,
    n_echo: int,
    concurrency: int,
    learned: int,
    expected: int,
    learned_s: float,
    pushed_s: float,
    create_s: float,
    gs_ready_s: float,
) -> dict[str, Any]:
    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a and b else None

    return {
        "kube": "real",
        "callers": n_callers,
        "callees": n_callees,
        "echo_pods": n_echo,
        "concurrency": concurrency,
        "first": first,
        "direct": direct,
        "reference": "direct calls (the same pairs, once learned and pushed)",
        "ratio_p50_first_to_direct": ratio(first["p50_s"], direct["p50_s"]),
        "ratio_p99_first_to_direct": ratio(first["p99_s"], direct["p99_s"]),
        "ratio_throughput_first_to_direct": ratio(first["calls_per_s"], direct["calls_per_s"]),
        "learned": learned,
        "expected_dependencies": expected,
        "all_learned_after_calls_s": round(learned_s, 1),
        "direct_ready_after_learned_s": round(pushed_s, 1),
        "callees_created_s": round(create_s, 1),
        "global_sidecar_proxy_ready_s": round(gs_ready_s, 1),
        "notes": [
            f"{first['calls']} first-ever calls: {n_callers} fenced caller pods x {n_callees} "
            f"callee Services (EndpointSlices on {n_echo} shared echo pods), each pair once, "
            f"shuffled, {concurrency} workers; each call a new HTTP/1.1 connection from the "
            "caller pod through its istio-proxy, the catch-all to the global-sidecar (in the "
            "mesh) and the global-sidecar's istio-proxy to the callee. Reference: "
            f"{direct['calls']} of those pairs again, direct, after lazyload learned them.",
            "Latency is measured by the benchmark around each call, which includes the caller "
            "pod's control socket (the same for both kinds of call). The callees' namespace is "
            "in LAZYLOAD_FENCE__DENY_NAMESPACES (they have no pods).",
        ],
    }


def rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    f, d, name = result["first"], result["direct"], "first_calls"

    def trio(x: dict[str, Any]) -> str:
        return " / ".join(mesh_rig.ms(x[k]) for k in ("p50_s", "p95_s", "p99_s"))

    def fmt(v: float | None, spec: str) -> str:
        return "n/a" if v is None else format(v, spec)

    reasons = "; ".join(f"{k} x{v}" for k, v in f["failure_reasons"].items()) or "none"
    return [
        (
            name,
            "first calls: failed / total (goal 0)",
            f"{f['failures']} / {f['calls']:,} ({reasons})",
        ),
        (name, "first calls through the global-sidecar", f"{f['via_global_sidecar']:,}"),
        (name, "first calls p50 / p95 / p99", trio(f)),
        (name, "direct calls (reference) p50 / p95 / p99", trio(d)),
        (
            name,
            "throughput first / direct",
            f"{f['calls_per_s']} / {d['calls_per_s']} calls/s "
            f"({fmt(result['ratio_throughput_first_to_direct'], '.2f')}x)",
        ),
        (
            name,
            "latency first / direct p50, p99",
            f"{fmt(result['ratio_p50_first_to_direct'], '.2f')}x, "
            f"{fmt(result['ratio_p99_first_to_direct'], '.2f')}x",
        ),
        (
            name,
            "direct calls: failed / through the global-sidecar",
            f"{d['failures']} / {d['via_global_sidecar']} of {d['calls']:,}",
        ),
        (
            name,
            "dependencies learned",
            f"{result['learned']:,} / {result['expected_dependencies']:,} "
            f"({result['all_learned_after_calls_s']} s after the last call)",
        ),
    ]


def plot(result: dict[str, Any], plots: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["p50", "p95", "p99"]
    fig, ax = plt.subplots(figsize=(6, 4))
    width = 0.38
    for offset, key in ((-width / 2, "first"), (width / 2, "direct")):
        values = [(result[key][f"{q}_s"] or 0) * 1000 for q in labels]
        ax.bar([i + offset for i in range(3)], values, width, label=f"{key} calls")
    ax.set_xticks(range(3), labels)
    ax.set_ylabel("ms")
    ax.set_title(
        f"Real mesh: {result['first']['calls']:,} first calls "
        f"({result['first']['failures']} failed) vs direct"
    )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, plots, "first_calls.png")
