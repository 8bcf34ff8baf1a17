"""Storm (issue item 4): E new edges across F fences in about one second.

DependencyObserved events are published straight to NATS (`lazyload_common.jetstream.publish` on
`subjects.deps`) against a stack without Envoy (`StackConfig(with_envoy=False)`): the caller
Services exist in the Kubernetes API, the edges are interleaved round-robin across the fences
(each fence gets its edges spread over the second). Measured: Kubernetes API writes per fence -
Sidecar writes and ServiceFence writes - the most writes one fence got within one coalescing
window (the writer's `coalesce_window`, 0.1 s), and the time until every Sidecar holds all its
hosts (checked through the API at the end).

The API server is the emulator (default) or, with `kube="real"` (`python -m bench --kube real`),
etcd + kube-apiserver + kube-controller-manager. Writes are counted from the emulator's request
log (`GET <kube_api>/emulator/v1/requests`, polled and deduplicated so it cannot wrap) or from
kube-apiserver's JSON audit log (config `audit`, default 1 on the real server); without either,
only the totals of the services' own Prometheus write counters are known (no per-window figure).
Reference in the same run: a naive controller writing once per edge (E fence + E Sidecar writes),
and the time it took to publish the storm.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from bench.common import (
    WRITE_VERBS,
    AuditLog,
    CpuMeter,
    PollingThread,
    RequestLog,
    create_all,
    ensure_namespace,
    kube_api,
    kube_label,
    metrics_writes,
    percentile,
    plot_file,
    save_figure,
    stack_config,
    wait_for,
)

NAMESPACE = "storm"
DEST_NAMESPACE = "storm-dst"
DEFAULT_QPS = 50.0  # LAZYLOAD_KUBE__QPS default (burst 100)
COALESCE_WINDOW_S = 0.1  # sidecar-writer's default LAZYLOAD_SIDECAR__COALESCE_WINDOW
FENCE_COALESCE_WINDOW_S = 0.05  # fence-reconciler's default LAZYLOAD_FENCE__COALESCE_WINDOW


def fence_name(i: int) -> str:
    return f"caller-{i}"


def edges_of(fences: int, edges: int, destinations: int) -> list[tuple[str, str]]:
    """(fence, destination FQDN), round-robin over fences; fence i gets edges/fences hosts."""
    per = max(1, edges // fences)
    out = []
    for j in range(per):
        for i in range(fences):
            d = (i * per + j) % destinations
            out.append((fence_name(i), f"dst-{d}.{DEST_NAMESPACE}.svc.cluster.local"))
    return out[:edges]


def register_callers(kubeconfig: str, fences: int, *, workers: int = 8) -> float:
    from bench.common import service_body

    kube = kube_api(kubeconfig)
    ensure_namespace(kube, NAMESPACE)
    ensure_namespace(kube, DEST_NAMESPACE)
    t0 = time.perf_counter()
    create_all(
        kube,
        (
            (f"/api/v1/namespaces/{NAMESPACE}/services", service_body(NAMESPACE, fence_name(i)))
            for i in range(fences)
        ),
        workers=workers,
    )
    return time.perf_counter() - t0


async def publish_edges(
    endpoints: dict[str, Any],
    pairs: list[tuple[str, str]],
    *,
    seconds: float = 1.0,
    slices: int = 10,
) -> float:
    """Publish every edge (JetStream-acked) spread over `seconds`, as accesslog-ingest would (its
    NATS identity); return the publish duration."""
    import nats
    from lazyload_common import events, jetstream, natsauth, subjects

    nc = await nats.connect(**natsauth.endpoint_options(endpoints, natsauth.INGEST))
    js = nc.jetstream()
    now = time.time()
    sem = asyncio.Semaphore(512)

    async def one(caller: str, host: str) -> None:
        name = host.split(".", 1)[0]
        event = events.DependencyObserved(
            source_namespace=NAMESPACE,
            source_name=caller,
            destination_host=host,
            destination_port=9080,
            destination_namespace=DEST_NAMESPACE,
            destination_service=name,
            first_seen=now,
            reporter="bench",
        )
        async with sem:
            await jetstream.publish(
                js, subjects.deps(NAMESPACE, caller), event, msg_id=event.edge_key, timeout=30
            )

    t0 = time.perf_counter()
    size = max(1, len(pairs) // slices)
    try:
        for k, start in enumerate(range(0, len(pairs), size)):
            due = t0 + k * seconds / slices
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            await asyncio.gather(*(one(c, h) for c, h in pairs[start : start + size]))
        return time.perf_counter() - t0
    finally:
        await nc.close()


def sidecar_hosts(kubeconfig: str) -> dict[str, set[str]]:
    kube = kube_api(kubeconfig)
    items = kube.list(f"/apis/networking.istio.io/v1/namespaces/{NAMESPACE}/sidecars")["items"]
    return {
        s["metadata"]["name"]: {h for e in s["spec"].get("egress", []) for h in e.get("hosts", [])}
        for s in items
    }


def all_right(kubeconfig: str, want: dict[str, set[str]]) -> bool:
    have = sidecar_hosts(kubeconfig)
    return all({f"*/{h}" for h in hosts} <= have.get(name, set()) for name, hosts in want.items())


async def until_all_right(
    kubeconfig: str, want: dict[str, set[str]], timeout: float, what: str
) -> None:
    """Wait (in a thread, polling every 0.5 s) until every Sidecar holds its wanted hosts;
    TimeoutError naming `what` after `timeout` seconds."""
    await asyncio.to_thread(
        wait_for, lambda: all_right(kubeconfig, want), timeout=timeout, interval=0.5, what=what
    )


class _Poller(PollingThread):
    """Polls the request log in a thread, as seldom as the request rate allows."""

    def __init__(self, log: RequestLog | AuditLog) -> None:
        self.log = log
        super().__init__("request-log")

    def _last(self) -> None:
        self.log.poll()

    def _run(self) -> None:
        interval = 0.5
        while not self._stop.wait(interval):
            t0 = time.monotonic()
            new = self.log.poll()
            interval = self.log.next_interval(new, interval + time.monotonic() - t0)


def count_writes(records: list[dict], fences: int) -> dict[str, Any]:
    """Writes by kind; per fence (creates are POSTs to the collection: one per fence at most)."""
    kinds = {"sidecars": "sidecar", "servicefences": "servicefence"}
    totals: Counter[str] = Counter()
    per_fence: dict[str, Counter[str]] = {k: Counter() for k in kinds.values()}
    windows: dict[str, Counter[tuple[str, int]]] = {k: Counter() for k in kinds.values()}
    by_writer: dict[str, Counter[tuple[str, int]]] = {
        "reconciler": Counter(),
        "condition": Counter(),
    }
    # when each writer wrote each object (updates only: a create has no name in its path)
    times: dict[str, dict[str, list[float]]] = {
        "sidecar": defaultdict(list),
        "reconciler": defaultdict(list),
    }
    for r in records:
        # only successful writes: a GET of the object (the writer reads before it writes) in
        # the same window is not a second write (counting reads made "max per window" 2)
        if r["status"] >= 400 or r["verb"].upper() not in WRITE_VERBS:
            continue
        parts = [p for p in r["path"].split("/") if p]
        for plural, kind in kinds.items():
            if plural not in parts:
                continue
            idx = parts.index(plural)
            name = parts[idx + 1] if len(parts) > idx + 1 else f"<create:{r['time']}>"
            totals[f"{kind}_{r['verb'].lower()}"] += 1
            totals[kind] += 1
            per_fence[kind][name] += 1
            windows[kind][(name, int(r["time"] / COALESCE_WINDOW_S))] += 1
            who = kind
            if kind == "servicefence":  # PUT/POST = fence-reconciler, PATCH = writer's condition
                who = "condition" if r["verb"].upper() == "PATCH" else "reconciler"
                by_writer[who][(name, int(r["time"] / COALESCE_WINDOW_S))] += 1
            if who in times and not name.startswith("<create"):
                times[who][name].append(r["time"])
    out: dict[str, Any] = {"by_verb": dict(totals)}
    # the smallest time between two updates of one object by one writer (vs its own window)
    out["min_gap_s"] = {who: _min_gap(by_name) for who, by_name in times.items()}
    out["servicefence_by_writer"] = {
        who: {
            "writes": sum(w.values()),
            "per_fence_per_window_max": max(w.values(), default=0),
        }
        for who, w in by_writer.items()
    }
    for kind in kinds.values():
        named = [v for k, v in per_fence[kind].items() if not k.startswith("<create")]
        creates = sum(v for k, v in per_fence[kind].items() if k.startswith("<create"))
        out[kind] = {
            "writes": totals[kind],
            "creates": creates,
            "per_fence_mean": round(totals[kind] / max(fences, 1), 3),
            "per_fence_max_updates": max(named, default=0),
            "per_fence_per_window_max": max(windows[kind].values(), default=0),
            "per_fence_per_window_mean": round(
                sum(windows[kind].values()) / max(len(windows[kind]), 1), 3
            ),
        }
    return out


def _min_gap(by_name: dict[str, list[float]]) -> float | None:
    gaps = [
        b - a
        for stamps in by_name.values()
        for a, b in zip(sorted(stamps), sorted(stamps)[1:], strict=False)
    ]
    return round(min(gaps), 4) if gaps else None


def writes_from_metrics(delta: dict[str, dict[str, float]], fences: int) -> dict[str, Any]:
    """`count_writes`' shape from the services' write counters (no per-object, per-window or
    per-writer split: those are None). The writer's `SidecarReady` condition patches are not
    counted by any service: ServiceFence writes here are fence-reconciler's alone."""
    reconciler = delta.get("fence-reconciler", {})
    writer = delta.get("sidecar-writer", {})
    out: dict[str, Any] = {
        "source": "metrics",
        "min_gap_s": {"sidecar": None, "reconciler": None},
        "by_verb": {
            **{f"servicefence_{op}": int(n) for op, n in reconciler.items()},
            **{f"sidecar_{action}": int(n) for action, n in writer.items()},
        },
        "servicefence_by_writer": {
            "reconciler": {
                "writes": int(sum(reconciler.values())),
                "per_fence_per_window_max": None,
            },
            "condition": {"writes": None, "per_fence_per_window_max": None},
        },
    }
    for kind, counts, create in (
        ("sidecar", writer, "create"),
        ("servicefence", reconciler, "create"),
    ):
        total = int(sum(counts.values()))
        out[kind] = {
            "writes": total,
            "creates": int(counts.get(create, 0)),
            "per_fence_mean": round(total / max(fences, 1), 3),
            "per_fence_max_updates": None,
            "per_fence_per_window_max": None,
            "per_fence_per_window_mean": None,
        }
    return out


def _delta(
    after: dict[str, dict[str, float]], before: dict[str, dict[str, float]]
) -> dict[str, dict[str, float]]:
    return {
        service: {k: v - before.get(service, {}).get(k, 0.0) for k, v in counts.items()}
        for service, counts in after.items()
    }


async def storm(
    stack: Any, fences: int, edges: int, *, timeout: float, audit_log: Path | None = None
) -> dict[str, Any]:
    """Register, publish the storm, wait until every Sidecar is right; returns the measurements.

    Writes are counted from the emulator's request log, from the real API server's audit log
    (`audit_log`), or, on a real API server without one, from the services' write counters only.
    """
    import contextlib

    from lazyload_cli.demo import SidecarWatch

    ep = stack.endpoints
    pairs = edges_of(fences, edges, destinations=max(50, edges // 20))
    want: dict[str, set[str]] = defaultdict(set)
    for caller, host in pairs:
        want[caller].add(host)
    register_s = await asyncio.to_thread(register_callers, ep["kubeconfig"], fences)
    await asyncio.sleep(2.0)  # the reconciler's Service reflector sees the callers
    log: RequestLog | AuditLog | None = None
    if ep.get("kube", "emulator") == "emulator":
        log = RequestLog(ep["kube_api"])
    elif audit_log is not None:
        log = AuditLog(audit_log)
    if log is not None:
        await asyncio.to_thread(log.clear)
    counters_before = await asyncio.to_thread(metrics_writes, ep["admin"])
    cpu = CpuMeter(stack.processes.pids()).start()
    watch = SidecarWatch()
    nc = await watch.start(ep)
    partial: str | None = None
    try:
        with _Poller(log) if log is not None else contextlib.nullcontext():
            t0 = time.time()
            publish_s = await publish_edges(ep, pairs)

            def right() -> bool:
                return all(all(watch.holds(name, h) for h in hosts) for name, hosts in want.items())

            try:
                await asyncio.to_thread(
                    wait_for, right, timeout=timeout, interval=0.1, what="every Sidecar right"
                )
                seen_right_s: float | None = time.time() - t0
                await until_all_right(
                    ep["kubeconfig"], want, timeout=60, what="every Sidecar right in the API"
                )
            except TimeoutError as e:  # a partial result, not an error: say how far it got
                seen_right_s = None
                done = sum(all(watch.holds(n, h) for h in hs) for n, hs in want.items())
                partial = (
                    f"{e} ({done:,} of {len(want):,} fences right after {time.time() - t0:.0f} s)"
                )
            await asyncio.sleep(1.0)  # late writes (coalesced tails) still count
    finally:
        await nc.close()
    right_at = {
        name: max(watch.written_at(name, h) or float("inf") for h in hosts)
        for name, hosts in want.items()
    }
    per_fence_s = [t - t0 for t in right_at.values() if t != float("inf")]
    all_right_s = max(per_fence_s) if per_fence_s and partial is None else None
    cpu_s = cpu.stop()  # publish to the end of the late-write second
    counters = _delta(await asyncio.to_thread(metrics_writes, ep["admin"]), counters_before)
    if log is not None:
        writes = count_writes(list(log.records.values()), fences)
        writes["source"] = "request log" if isinstance(log, RequestLog) else "audit log"
    else:
        writes = writes_from_metrics(counters, fences)
    return {
        "kube": ep.get("kube", "emulator"),
        "fences": fences,
        "edges": len(pairs),
        "edges_per_fence": len(pairs) / fences,
        "register_s": round(register_s, 2),
        "publish_s": round(publish_s, 3),
        "publish_edges_per_s": round(len(pairs) / publish_s, 1),
        "all_right_s": round(all_right_s, 3) if all_right_s is not None else None,
        "all_right_observed_s": round(seen_right_s, 3) if seen_right_s is not None else None,
        "fences_right": len(per_fence_s),
        "partial": partial,
        "fence_right_p50_s": percentile(per_fence_s, 50),
        "fence_right_p99_s": percentile(per_fence_s, 99),
        "api_requests": len(log.records) if log is not None else None,
        "api_log_max_batch": log.max_batch if log is not None else None,
        "api_log_polls": log.polls if log is not None else None,
        "api_log_gaps": log.gaps if log is not None else None,
        "writes": writes,
        "metrics_writes": counters,
        "cpu_s": cpu_s,
        "sidecar_writes_per_fence": writes["sidecar"]["per_fence_mean"],
        "servicefence_writes_per_fence": writes["servicefence"]["per_fence_mean"],
        "reference": {
            "naive_writes": 2 * len(pairs),
            "publish_s": round(publish_s, 3),
        },
        "ratio_writes_to_naive": round(
            (writes["sidecar"]["writes"] + writes["servicefence"]["writes"]) / (2 * len(pairs)), 4
        ),
        "ratio_all_right_to_publish": (
            round(all_right_s / publish_s, 2) if all_right_s is not None else None
        ),
    }


def kube_env(qps: float | None) -> dict[str, str]:
    """Environment of the services for a client-side rate limit of `qps` (burst 2x); {} = default
    (`LAZYLOAD_KUBE__QPS` 50, burst 100)."""
    if not qps:
        return {}
    return {"LAZYLOAD_KUBE__QPS": str(qps), "LAZYLOAD_KUBE__BURST": str(int(2 * qps))}


async def _one(
    config: dict[str, Any], workdir: Path, qps: float | None, kube: str = "emulator"
) -> dict[str, Any]:
    from lazyload_cli.stack import Stack

    fences, edges = int(config["fences"]), int(config["edges"])
    audit = kube == "real" and bool(config.get("audit", 1))
    stack_cfg, audit_log = stack_config(
        workdir / "stack", kube=kube, extra_env=kube_env(qps), audit=audit
    )
    with Stack(stack_cfg) as stack:
        result = await storm(
            stack, fences, edges, timeout=float(config.get("timeout", 300)), audit_log=audit_log
        )
        stack.check_alive()
    result["kube_qps"] = qps or DEFAULT_QPS
    return result


def _count_note(result: dict[str, Any]) -> str:
    source = result["writes"].get("source", "request log")
    common = (
        "'per window' = the most writes one fence got within one "
        f"{COALESCE_WINDOW_S} s coalescing window (goal <= 1). ServiceFence writes are split into "
        "fence-reconciler's (POST/PUT of the status) and sidecar-writer's `SidecarReady` "
        "condition (PATCH of the status). The 0.1 s window is the writer's; fence-reconciler's "
        f"own is {FENCE_COALESCE_WINDOW_S} s (`LAZYLOAD_FENCE__COALESCE_WINDOW`), so 2 of its "
        "writes in one 0.1 s window keep its contract when they are >= 50 ms apart: 'shortest "
        "time between 2 writes of one fence' says it directly."
    )
    if source == "request log":
        return (
            "Writes counted from the emulator's request log (successful POST/PUT/PATCH/DELETE on "
            "sidecars and servicefences). " + common
        )
    if source == "audit log":
        return (
            "Writes counted from kube-apiserver's JSON audit log (every request at Metadata "
            "level, `--audit-log-mode=blocking`; successful create/update/patch/delete on "
            "sidecars and servicefences). " + common + " The audit log costs the API server "
            "CPU (a JSON record of every request, written before it answers): the times of this "
            "run are pessimistic; scaleout_real's 1-replica run is the same load at QPS 1,000 "
            "without an audit log. The services' own write counters are in `metrics_writes`."
        )
    return (
        "Writes counted by the services' own Prometheus counters (fence-reconciler's "
        "`lazyload_fence_writes_total`, sidecar-writer's `lazyload_sidecar_writer_writes_total`; "
        "`--set storm.audit=0`: no audit log): totals only, no per-window figure, and the "
        "writer's `SidecarReady` condition patches are in neither."
    )


async def _run(config: dict[str, Any], workdir: Path, kube: str = "emulator") -> dict[str, Any]:
    fences = int(config["fences"])
    result = await _one(config, workdir / "default-qps", None, kube=kube)
    raised = float(config.get("raised_qps", 0))
    if raised:
        result["raised_qps"] = await _one(config, workdir / "raised-qps", raised, kube=kube)
    result["kube"] = kube
    result["notes"] = [
        f"{result['edges']} DependencyObserved published in {result['publish_s']} s "
        f"(target 1 s) across {fences} fences, round-robin; stack without Envoy; Kubernetes "
        f"API: {kube_label(kube)}.",
        _count_note(result),
        f"First run: the services' default client-side rate limit (`LAZYLOAD_KUBE__QPS` "
        f"{DEFAULT_QPS:.0f}, burst {2 * DEFAULT_QPS:.0f})"
        + (
            f"; second run (rows 'QPS {raised:.0f}'): a fresh stack with `LAZYLOAD_KUBE__QPS` "
            f"{raised:.0f}, burst {2 * raised:.0f} - raised, not the default."
            if raised
            else "."
        ),
        "Reference (same run): a naive controller = one ServiceFence and one Sidecar write per edge.",
        "Eager auto-fence off (`LAZYLOAD_FENCE__EAGER=false`, the default before 2026-12-06): "
        "each fence is created by its first edge, so creates are part of the storm, as in "
        "earlier runs.",
        "Reports before 2026-11-25 counted every successful request, GETs included, as a write: "
        "their write counts were inflated and their 'max per window 2' was a read next to a "
        "write. A ServiceFence 'max per window' of 2 now means one fence-reconciler write and "
        "the writer's one-time `SidecarReady` condition patch in the same 0.1 s (two "
        "controllers, each <= 1).",
    ]
    return result


def run(config: dict[str, Any], workdir: Path, kube: str = "emulator") -> dict[str, Any]:
    return asyncio.run(_run(config, workdir, kube))


def rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    out = _rows(result, "")
    raised = result.get("raised_qps")
    if raised:
        out += _rows(raised, f"QPS {raised['kube_qps']:.0f} (raised): ")
    return out


def _rows(result: dict[str, Any], prefix: str) -> list[tuple[str, str, str]]:
    w = result["writes"]
    by = w.get("servicefence_by_writer", {})
    out = []
    if not prefix:
        out += [
            ("storm", "edges / fences", f"{result['edges']:,} / {result['fences']:,}"),
            ("storm", "published in", f"{result['publish_s']:.2f} s"),
        ]
    if result.get("partial"):
        out.append(("storm", f"{prefix}PARTIAL", str(result["partial"])[:160]))
    out += [
        (
            "storm",
            f"{prefix}Sidecar writes per fence (mean / max per window)",
            f"{w['sidecar']['per_fence_mean']:.2f} / "
            f"{_na(w['sidecar']['per_fence_per_window_max'])}",
        ),
        (
            "storm",
            f"{prefix}ServiceFence writes per fence (mean / max per window)",
            f"{w['servicefence']['per_fence_mean']:.2f} / "
            f"{_na(w['servicefence']['per_fence_per_window_max'])}"
            + (
                f" (reconciler max {by['reconciler']['per_fence_per_window_max']}, "
                f"writer condition max {by['condition']['per_fence_per_window_max']})"
                if by and by["reconciler"]["per_fence_per_window_max"] is not None
                else " (fence-reconciler's only: from its counters)"
                if w.get("source") == "metrics"
                else ""
            ),
        ),
    ]
    gap = w.get("min_gap_s") or {}
    if gap.get("sidecar") is not None or gap.get("reconciler") is not None:
        out.append(
            (
                "storm",
                f"{prefix}shortest time between 2 writes of one fence: Sidecar / fence status",
                f"{_ms(gap.get('sidecar'))} (writer window {COALESCE_WINDOW_S * 1000:.0f} ms) / "
                f"{_ms(gap.get('reconciler'))} (reconciler window "
                f"{FENCE_COALESCE_WINDOW_S * 1000:.0f} ms)",
            )
        )
    out += [
        (
            "storm",
            f"{prefix}writes / naive (1 per edge per kind)",
            f"{result['ratio_writes_to_naive']:.4f}",
        ),
        (
            "storm",
            f"{prefix}time until all Sidecars right",
            _seconds(result["all_right_s"], result),
        ),
        (
            "storm",
            f"{prefix}all right / publish time",
            _times(result["ratio_all_right_to_publish"]),
        ),
    ]
    if result.get("cpu_s"):
        out.append(("storm", f"{prefix}CPU seconds while converging", cpu_summary(result["cpu_s"])))
    return out


def cpu_summary(cpu: dict[str, Any], top: int = 4) -> str:
    """`kube-apiserver 80 s, fence-reconciler 30 s, ...; other jobs 40 s (of 2 x 90 s)`."""
    parts = [f"{name} {seconds:.0f}" for name, seconds in list(cpu["by_process_s"].items())[:top]]
    return (
        ", ".join(parts)
        + f"; outside the stack {cpu['outside_stack_s']:.0f} (of {cpu['cores']} cores x "
        + f"{cpu['wall_s']:.0f} s wall)"
    )


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1000:.0f} ms"


def _na(value: Any) -> str:
    return "n/a" if value is None else str(value)


def _seconds(value: float | None, result: dict[str, Any]) -> str:
    if value is None:
        return f"not reached ({result.get('fences_right', 0):,} of {result['fences']:,} fences)"
    return f"{value:.2f} s"


def _times(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def plot(result: dict[str, Any], plots: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = result["writes"]
    labels = ["Sidecar", "ServiceFence"]
    measured = [w["sidecar"]["per_fence_mean"], w["servicefence"]["per_fence_mean"]]
    naive = [result["edges_per_fence"]] * 2
    fig, ax = plt.subplots(figsize=(6, 4))
    x = range(len(labels))
    ax.bar([i - 0.2 for i in x], naive, 0.4, label="naive: 1 write per edge", color="lightgrey")
    ax.bar([i + 0.2 for i in x], measured, 0.4, label="lazyload (measured)", color="tab:blue")
    ax.set_xticks(list(x), labels)
    ax.set_ylabel("API writes per fence")
    ax.set_title(
        f"Storm: {result['edges']:,} edges over {result['fences']:,} fences\n"
        f"({kube_label(result.get('kube', 'emulator'))})"
    )
    ax.legend()
    return save_figure(fig, plots, plot_file(result, "storm_writes.png"))
