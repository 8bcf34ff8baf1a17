"""Convergence in a real mesh (issue 14): first call of a new dependency -> the caller's sidecar
routes it direct, istiod's push included.

The rig of `lazyload_testing.mesh` (istiod + istio-proxy pods on a real kube-apiserver) with
lazyload in it (`LazyloadInMesh`: the four services, the global-sidecar pod in the mesh, the
`to-global-sidecar` EnvoyFilter). A few fenced caller pods, `dependencies` callee Services (each
with an EndpointSlice on one of a few shared echo pods). Each caller makes its first call to one
callee after the other; per dependency:

- first call -> Sidecar written: until a watch on the API server sees the host in the caller's
  Sidecar's egress;
- first call -> direct: until the caller's istio-proxy (its admin API, polled) holds the callee's
  `outbound|80||<fqdn>` cluster and route configuration `80` has its virtual host, and istiod's
  `/debug/syncz` says the proxy ACKed everything it was sent; then a second call is checked to go
  direct (no `slime-orig-dest` header: not through the global-sidecar).

Reference measured in the same run: the push stage alone (Sidecar written -> direct: what istiod
and Envoy take for any Sidecar change, hand-written ones included), and the ratio of the whole to it.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from bench import mesh_rig
from bench.common import percentile, save_figure

CALLERS_NS = "bench-conv"
CALLEES_NS = "bench-conv-deps"
ECHO_NS = "bench-conv-echo"
POLL_S = 0.05


def _percentiles(values: list[float]) -> dict[str, float | None]:
    return {f"p{q}_s": percentile(values, q) for q in (50, 95, 99)} | {
        "max_s": max(values) if values else None
    }


def _direct(workload: Any, mesh: Any, host: str) -> bool:
    cluster = f"outbound|{mesh_rig.CALLEE_PORT}||{host}"
    if not mesh_rig.has_cluster(workload, cluster):
        return False
    if not mesh_rig.route_has_domain(workload, str(mesh_rig.CALLEE_PORT), host):
        return False
    resources = mesh_rig.syncz(mesh).get(f"{workload.name}.{workload.namespace}", {})
    return mesh_rig.in_sync(resources)


def _caller_loop(
    mesh: Any, caller: Any, hosts: list[str], timeout: float, out: list[dict[str, Any]]
) -> None:
    for host in hosts:
        record: dict[str, Any] = {"caller": caller.name, "host": host}
        out.append(record)
        t0 = time.time()
        record["t0"] = t0
        try:
            status, body = caller.http_get(f"http://{host}/first", timeout=10)
            record["first_status"] = status
            record["first_via_global_sidecar"] = "slime-orig-dest" in json.loads(body)["headers"]
        except Exception as e:  # counted, the run goes on
            record["first_error"] = f"{type(e).__name__}: {e}"
            continue
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _direct(caller, mesh, host):
                record["direct_at"] = time.time()
                break
            time.sleep(POLL_S)
        if "direct_at" not in record:
            continue
        try:
            status, body = caller.http_get(f"http://{host}/second", timeout=10)
            record["second_status"] = status
            record["second_direct"] = "slime-orig-dest" not in json.loads(body)["headers"]
        except Exception as e:
            record["second_error"] = f"{type(e).__name__}: {e}"


def run(config: dict[str, Any], workdir: Path) -> dict[str, Any]:
    n = int(config["dependencies"])
    n_callers = int(config.get("callers", 4))
    n_echo = int(config.get("echo_pods", 2))
    timeout = float(config.get("timeout", 60))
    t_start = time.perf_counter()
    with mesh_rig.call_rig(
        workdir,
        namespaces=(CALLERS_NS, CALLEES_NS, ECHO_NS),
        callees=[f"dep-{i}" for i in range(n)],
        callers=n_callers,
        echo_pods=n_echo,
        global_sidecar_timeout=120,
    ) as rig:
        mesh, stack, callers, hosts, create_s = (
            rig.mesh, rig.stack, rig.callers, rig.hosts, rig.create_s
        )  # fmt: skip
        setup_s = time.perf_counter() - t_start
        records: list[dict[str, Any]] = []
        with mesh_rig.SidecarWatch(mesh, CALLERS_NS) as watch:
            threads = []
            for i, caller in enumerate(callers):
                thread = threading.Thread(
                    target=_caller_loop,
                    args=(mesh, caller, hosts[i::n_callers], timeout, records),
                )
                threads.append(thread)
                thread.start()
                time.sleep(0.3)  # stagger the callers
            for thread in threads:
                thread.join()
            time.sleep(0.5)  # watch events still on their way
            for r in records:
                seen = watch.seen.get((r["caller"], r["host"]))
                if seen is not None:
                    r["sidecar_at"] = seen
        stack.check_alive()
    return _summarise(n, n_callers, n_echo, records, setup_s, create_s)


def _summarise(
    n: int,
    n_callers: int,
    n_echo: int,
    records: list[dict[str, Any]],
    setup_s: float,
    create_s: float,
) -> dict[str, Any]:
    total = [r["direct_at"] - r["t0"] for r in records if "direct_at" in r]
    sidecar = [r["sidecar_at"] - r["t0"] for r in records if "sidecar_at" in r]
    push = [
        r["direct_at"] - r["sidecar_at"] for r in records if {"sidecar_at", "direct_at"} <= r.keys()
    ]
    failures = [
        r.get("first_error") or f"status {r['first_status']}"
        for r in records
        if r.get("first_error") or r.get("first_status") != 200
    ]
    whole, written, pushed = _percentiles(total), _percentiles(sidecar), _percentiles(push)
    p50, push50 = whole["p50_s"], pushed["p50_s"]
    return {
        "kube": "real",
        "dependencies": n,
        "callers": n_callers,
        "echo_pods": n_echo,
        "first_calls_ok": sum(1 for r in records if r.get("first_status") == 200),
        "first_calls_via_global_sidecar": sum(
            1 for r in records if r.get("first_via_global_sidecar")
        ),
        "first_call_failures": failures,
        "converged": len(total),
        "second_calls_direct": sum(1 for r in records if r.get("second_direct")),
        "first_call_to_direct": whole,
        "first_call_to_sidecar": written,
        "sidecar_to_direct": pushed,
        "share_sidecar_stage_p50": (written["p50_s"] / p50) if p50 and written["p50_s"] else None,
        "reference": {"what": "Sidecar written -> direct (istiod push + Envoy)", **pushed},
        "ratio_p50_to_push_stage": (p50 / push50) if p50 and push50 else None,
        "setup_s": round(setup_s, 1),
        "callees_created_s": round(create_s, 2),
        "samples": [
            {
                "caller": r["caller"],
                "host": r["host"],
                "to_sidecar_s": round(r["sidecar_at"] - r["t0"], 4) if "sidecar_at" in r else None,
                "to_direct_s": round(r["direct_at"] - r["t0"], 4) if "direct_at" in r else None,
            }
            for r in records
        ],
        "notes": [
            f"{n} new dependencies (callee Services on {n_echo} shared echo pods), {n_callers} "
            "fenced caller pods each calling its own share one after the other, in parallel; real "
            "istiod and istio-proxy (pilot-agent + Envoy) on a real kube-apiserver, the "
            "global-sidecar pod in the mesh.",
            "first call -> Sidecar written: a watch on the API server sees the host in the "
            "caller's Sidecar's egress. first call -> direct: the caller's istio-proxy holds the "
            "callee's cluster and its virtual host in route `80`, and istiod's /debug/syncz says "
            f"it ACKed all it was sent (polled every {POLL_S * 1000:.0f} ms); a second call then "
            "checked to go direct (no slime-orig-dest header).",
            "The callees' namespace is in LAZYLOAD_FENCE__DENY_NAMESPACES (they have no pods; "
            "their fences would only add API writes).",
        ],
    }


def rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    w, s, p = (
        result["first_call_to_direct"],
        result["first_call_to_sidecar"],
        result["sidecar_to_direct"],
    )
    ratio = result["ratio_p50_to_push_stage"]
    share = result["share_sidecar_stage_p50"]

    def trio(d: dict[str, Any]) -> str:
        return " / ".join(mesh_rig.ms(d[k]) for k in ("p50_s", "p95_s", "p99_s"))

    name = "mesh_convergence"
    return [
        (
            name,
            "dependencies: first calls OK / converged / next call direct",
            f"{result['first_calls_ok']} / {result['converged']} / "
            f"{result['second_calls_direct']} of {result['dependencies']}",
        ),
        (name, "first call -> routed direct p50 / p95 / p99", trio(w)),
        (name, "first call -> Sidecar written p50 / p95 / p99", trio(s)),
        (name, "Sidecar written -> direct (reference) p50 / p95 / p99", trio(p)),
        (name, "p50 whole / push stage", "n/a" if ratio is None else f"{ratio:.2f}x"),
        (name, "lazyload's share of the p50", "n/a" if share is None else f"{share:.0%}"),
    ]


def plot(result: dict[str, Any], plots: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    direct = sorted(s["to_direct_s"] * 1000 for s in samples if s["to_direct_s"] is not None)
    written = sorted(s["to_sidecar_s"] * 1000 for s in samples if s["to_sidecar_s"] is not None)
    if not direct:
        return []
    fig, ax = plt.subplots(figsize=(6, 4))
    for values, label in ((written, "first call -> Sidecar written"), (direct, "-> routed direct")):
        ax.plot(
            values, [(i + 1) / len(values) for i in range(len(values))], drawstyle="steps-post",
            label=label,
        )  # fmt: skip
    ax.set_xlabel("ms since the first call")
    ax.set_ylabel("fraction of dependencies")
    ax.set_title(f"Real mesh: {result['dependencies']} new dependencies")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, plots, "mesh_convergence_cdf.png")
