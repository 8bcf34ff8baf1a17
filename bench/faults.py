"""`make faults` (`python -m bench faults`): a real stack under a steady load of new edges, broken
one fault at a time; after each, a line of figures.

The stack (`bench/faults_stack.py`): nats-server, the Kubernetes API emulator, the four services,
a supervisor restarting whatever exits (1 s back-off, doubling, as `lazyload up` and a
Deployment do). The load (`bench/faults_load.py`): new edges at `rate`/s as ALS entries into
accesslog-ingest over gRPC, callers Services of namespace `faults`, destinations Services of
`faults-dst` (every edge new). Faults, in order:

- none (the reference window);
- SIGKILL of each service mid-load, three times each (the next once it is ready again);
- nats-server SIGKILLed, held down a few seconds and restarted on its store;
- the durable consumers deleted (fence-reconciler's and sidecar-writer's);
- the API server answering 409 to every write, then 429 with Retry-After, 500, 503 and 403 to
  every request, each for `api_fault_s`; then holding every request (a time-out) for as long;
- every watch expired (410 Gone, history compacted);
- the DEPS stream's disk full: its `max_bytes` cut to `full_bytes` for `full_s` (oldest dropped);
- on a second stack, a three-node JetStream cluster on loopback (R3 streams, the services given
  all three URLs): the node leading the DEPS stream SIGKILLed mid-load, held down, brought back.

After each fault: the time from the end of the fault until every Sidecar holds every edge sent
up to it (`recover_s`); an edge still missing after `settle_s` is called again (traffic
repeats: an ingest that lost what it held learns it again, one that still has it in its dedup
does not publish it) and what is still missing after that is lost (`edges_lost`, must be 0);
`lost_before_resend` counts what only the repeated call brought back; duplicate writes are
successful Sidecar writes that changed nothing (the emulator's request log marks them); dead letters
(LAZYLOAD_DLQ) and the services' restarts in the window.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.faults_load import ChangeCounter, Load, SidecarTruth
from bench.faults_stack import SERVICES, FaultStack

HERE = Path(__file__).resolve().parent

FULL: dict[str, Any] = {
    "rate": 20,
    "callers": 40,
    "destinations": 600,
    "kills": 3,
    "api_fault_s": 6,
    "timeout_hold_s": 20,
    "full_bytes": 16384,
    "full_s": 10,
    "nats_hold_s": 4,
    "settle_s": 40,
    "cluster": 1,
}
SMALL: dict[str, Any] = {
    **FULL,
    "destinations": 100,  # fewer Services: eager fences for all of them are made at start
    "kills": 1,
    "api_fault_s": 3,
    "full_s": 5,
    "settle_s": 30,
}


@dataclass
class Ctx:
    stack: FaultStack
    load: Load
    truth: SidecarTruth
    changes: ChangeCounter
    config: dict[str, Any]
    nc: Any = None
    js: Any = None


FaultFn = Callable[[Ctx], Awaitable[dict[str, Any]]]


# --- the faults -------------------------------------------------------------------------------


async def no_fault(ctx: Ctx) -> dict[str, Any]:
    await asyncio.sleep(float(ctx.config["api_fault_s"]))
    return {}


def kill_service(name: str) -> FaultFn:
    async def fault(ctx: Ctx) -> dict[str, Any]:
        back = []
        for _ in range(int(ctx.config["kills"])):
            await asyncio.sleep(random.uniform(1.0, 2.0))  # mid-load: edges always in flight
            await asyncio.to_thread(ctx.stack.kill, name)
            back.append(await asyncio.to_thread(ctx.stack.wait_ready, name, timeout=120))
        return {
            "kills": len(back),
            "service_back_s": [round(b, 2) if b is not None else None for b in back],
        }

    return fault


async def kill_nats(ctx: Ctx) -> dict[str, Any]:
    hold = float(ctx.config["nats_hold_s"])
    await asyncio.sleep(1.0)
    await asyncio.to_thread(ctx.stack.kill, ctx.stack.nats_name(0), hold=hold)
    t0 = time.monotonic()
    while not ctx.stack.nats_ready(0):
        await asyncio.sleep(0.1)
    back = {
        name: await asyncio.to_thread(ctx.stack.wait_ready, name, timeout=120) for name in SERVICES
    }
    return {
        "held_down_s": hold,
        "nats_back_s": round(hold + time.monotonic() - t0, 2),
        "services_ready_s": {k: round(v, 2) if v else None for k, v in back.items()},
    }


async def delete_consumers(ctx: Ctx) -> dict[str, Any]:
    from lazyload_common import subjects

    await asyncio.sleep(1.0)
    deleted = []
    for stream in (subjects.DEPS_STREAM, subjects.FENCES_STREAM):
        for info in await ctx.js.consumers_info(stream):
            await ctx.js.delete_consumer(stream, info.name)
            deleted.append(f"{stream}/{info.name}")
    await asyncio.sleep(2.0)
    return {"deleted": deleted}


def api_status(
    status: int, *, writes_only: bool = False, retry_after: int | None = None
) -> FaultFn:
    async def fault(ctx: Ctx) -> dict[str, Any]:
        from lazyload_kube_emulator.admin_client import AdminClient

        admin = AdminClient(ctx.stack.kube_api_url)
        verbs = ("POST", "PUT", "PATCH", "DELETE") if writes_only else ("*",)
        for verb in verbs:
            admin.inject_fault(verb, ".*", status=status, count=None, retry_after=retry_after)
        await asyncio.sleep(float(ctx.config["api_fault_s"]))
        hits = sum(f["hits"] for f in admin.faults())
        admin.clear_faults()
        return {"failed_requests": hits}

    return fault


async def api_timeout(ctx: Ctx) -> dict[str, Any]:
    from lazyload_kube_emulator.admin_client import AdminClient

    admin = AdminClient(ctx.stack.kube_api_url)
    hold = float(ctx.config["timeout_hold_s"])
    admin.inject_fault("*", ".*", status=504, count=None, delay=hold)
    await asyncio.sleep(float(ctx.config["api_fault_s"]))
    hits = sum(f["hits"] for f in admin.faults())
    admin.clear_faults()
    return {"held_requests": hits, "hold_s": hold}


async def expire_watches(ctx: Ctx) -> dict[str, Any]:
    from lazyload_kube_emulator.admin_client import AdminClient

    admin = AdminClient(ctx.stack.kube_api_url)
    await asyncio.sleep(1.0)
    first = admin.expire_watches()
    await asyncio.sleep(2.0)
    second = admin.expire_watches()
    await asyncio.sleep(1.0)
    return {"watches_expired": first + second}


async def stream_full(ctx: Ctx) -> dict[str, Any]:
    from lazyload_common import subjects

    info = await ctx.js.stream_info(subjects.DEPS_STREAM)
    config = info.config
    before = config.max_bytes
    config.max_bytes = int(ctx.config["full_bytes"])
    await ctx.js.update_stream(config)
    await asyncio.sleep(float(ctx.config["full_s"]))
    state = (await ctx.js.stream_info(subjects.DEPS_STREAM)).state
    config.max_bytes = before
    await ctx.js.update_stream(config)
    return {
        "max_bytes": int(ctx.config["full_bytes"]),
        "stream_bytes_at_end": state.bytes,
        "first_seq_at_end": state.first_seq,
        "discard": str(config.discard),
    }


async def kill_cluster_leader(ctx: Ctx) -> dict[str, Any]:
    from lazyload_common import subjects

    await asyncio.sleep(1.0)
    info = await ctx.js.stream_info(subjects.DEPS_STREAM)
    leader = info.cluster.leader if info.cluster else "n0"
    node = int(str(leader).lstrip("n"))
    hold = float(ctx.config["nats_hold_s"])
    await asyncio.to_thread(ctx.stack.kill, ctx.stack.nats_name(node), hold=hold)
    t0 = time.monotonic()
    while not ctx.stack.nats_ready(node):
        await asyncio.sleep(0.1)
    return {
        "killed": f"n{node} (DEPS stream leader)",
        "replicas": info.config.num_replicas,
        "held_down_s": hold,
        "node_back_s": round(hold + time.monotonic() - t0, 2),
    }


FAULTS: list[tuple[str, str, FaultFn]] = [
    ("none", "no fault (reference)", no_fault),
    *[(f"kill-{s}", f"SIGKILL {s} mid-load (x kills)", kill_service(s)) for s in SERVICES],
    ("kill-nats", "nats-server SIGKILLed, held down, restarted on its store", kill_nats),
    ("consumer-deleted", "the durable consumers deleted", delete_consumers),
    ("api-409", "409 Conflict on every write", api_status(409, writes_only=True)),
    ("api-429", "429 Retry-After 2 on every request", api_status(429, retry_after=2)),
    ("api-500", "500 on every request", api_status(500)),
    ("api-503", "503 on every request", api_status(503)),
    ("api-403", "403 on every request", api_status(403)),
    ("api-timeout", "every request held (the API server times out)", api_timeout),
    ("watch-expired", "every watch expired (410 Gone), twice", expire_watches),
    ("stream-full", "LAZYLOAD_DEPS full (a small max_bytes)", stream_full),
]
CLUSTER_FAULTS: list[tuple[str, str, FaultFn]] = [
    ("cluster-none", "3-node cluster, R3: no fault (reference)", no_fault),
    ("cluster-node-killed", "3-node cluster, R3: the DEPS leader SIGKILLed", kill_cluster_leader),
]


# --- one fault: inject, measure -----------------------------------------------------------------


async def dead_letters(js: Any) -> int | None:
    from lazyload_common import subjects

    try:
        return int((await js.stream_info(subjects.DLQ_STREAM)).state.messages)
    except Exception:
        return None


async def measure(ctx: Ctx, name: str, description: str, fault: FaultFn) -> dict[str, Any]:
    print(f"  fault {name}: {description}", flush=True)
    settle = float(ctx.config["settle_s"])
    dlq_before = await dead_letters(ctx.js)
    restarts_before = len(ctx.stack.restarts)
    start = time.time()
    await asyncio.sleep(1.0)
    detail = await fault(ctx)
    cleared = time.time()
    edges = ctx.load.sent_between(start, cleared)
    recover_s = await _caught_up(ctx, edges, cleared, settle)
    missing = [] if recover_s is not None else ctx.truth.missing(edges)
    lost = missing
    if missing:  # the callers call again: an ingest that lost what it held learns it again
        ctx.load.resend(missing)
        again = await _caught_up(ctx, missing, time.time(), settle)
        lost = [] if again is not None else await asyncio.to_thread(ctx.truth.missing, missing)
    end = time.time()
    writes, duplicates = ctx.changes.duplicates(start, end)
    dlq_after = await dead_letters(ctx.js)
    restarts = [n for t, n in ctx.stack.restarts[restarts_before:]]
    result = {
        "fault": name,
        "description": description,
        "edges_sent": len(edges),
        "edges_lost": len(lost),
        "lost_before_resend": len(missing),
        "recover_s": round(recover_s, 2) if recover_s is not None else None,
        "sidecar_writes": writes,
        "duplicate_writes": duplicates,
        "dead_letters": (dlq_after - dlq_before)
        if dlq_after is not None and dlq_before is not None
        else None,
        "restarts": restarts,
        "window_s": round(end - start, 1),
        **detail,
    }
    if lost:
        result["lost_sample"] = [ctx.load.edge(k) for k in lost[:5]]
    print(f"    {json.dumps(result, default=str)}", flush=True)
    return result


async def _caught_up(ctx: Ctx, edges: list[int], since: float, timeout: float) -> float | None:
    """Seconds from `since` until no Sidecar misses any of `edges`; None after `timeout`."""
    pending = list(edges)
    while True:
        pending = await asyncio.to_thread(ctx.truth.missing, pending)
        if not pending:
            return time.time() - since
        if time.time() - since > timeout:
            return None
        await asyncio.sleep(0.25)


# --- a whole run --------------------------------------------------------------------------------


async def run_stack(
    config: dict[str, Any], workdir: Path, faults: list[tuple[str, str, FaultFn]], nodes: int
) -> dict[str, Any]:
    import nats

    t0 = time.monotonic()
    stack = FaultStack(
        workdir,
        nats_nodes=nodes,
        callers=int(config["callers"]),
        destinations=int(config["destinations"]),
    )
    out: dict[str, Any] = {"nats_nodes": nodes, "faults": []}
    with stack:
        out["start_s"] = round(time.monotonic() - t0, 1)
        print(f"  stack up in {out['start_s']} s ({nodes} NATS node(s))", flush=True)
        load = Load(stack, float(config["rate"]))
        nc = await nats.connect(servers=stack.nats_urls, max_reconnect_attempts=-1)
        ctx = Ctx(stack, load, SidecarTruth(stack, load), ChangeCounter(stack), config, nc)
        ctx.js = nc.jetstream()
        stop = asyncio.Event()
        driver = asyncio.create_task(load.run(stop))
        try:
            with ctx.changes:
                await asyncio.sleep(3.0)  # the first fences and Sidecars
                warm = await _caught_up(ctx, list(load.sent_at), time.time(), 120.0)
                out["warm_up_s"] = round(warm, 1) if warm is not None else None
                for name, description, fault in faults:
                    if driver.done():
                        raise RuntimeError(f"the load stopped: {driver.exception()!r}")
                    try:
                        out["faults"].append(await measure(ctx, name, description, fault))
                    except Exception as e:
                        print(f"    fault {name} failed: {e!r}", flush=True)
                        out["faults"].append({"fault": name, "error": f"{type(e).__name__}: {e}"})
                load.producing = False
                every = list(load.sent_at)
                final = await _caught_up(ctx, every, time.time(), float(config["settle_s"]))
                missing = [] if final is not None else ctx.truth.missing(every)
                out.update(
                    edge_space=stack.callers * stack.destinations,
                    edges_generated=load.next_edge,
                    edges_total=len(every),
                    edges_lost_total=len(missing),
                    failed_als_streams=load.failed_streams,
                    restarts_total=len(stack.restarts),
                )
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await driver
            with contextlib.suppress(Exception):
                await nc.close()
        out["wall_s"] = round(time.monotonic() - t0, 1)
    return out


async def _run(config: dict[str, Any], workdir: Path, only: list[str] | None) -> dict[str, Any]:
    def chosen(faults: list[tuple[str, str, FaultFn]]) -> list[tuple[str, str, FaultFn]]:
        return [f for f in faults if not only or f[0] in only]

    result: dict[str, Any] = {"runs": []}
    single = chosen(FAULTS)
    if single:
        print("--- faults: one nats-server", flush=True)
        result["runs"].append(await run_stack(config, workdir / "single", single, 1))
    cluster = chosen(CLUSTER_FAULTS) if int(config.get("cluster", 1)) else []
    if cluster:
        print("--- faults: three-node JetStream cluster", flush=True)
        result["runs"].append(await run_stack(config, workdir / "cluster", cluster, 3))
    lines = [f for run in result["runs"] for f in run["faults"]]
    result["faults"] = lines
    result["edges_lost_total"] = sum(run.get("edges_lost_total", 0) for run in result["runs"])
    result["notes"] = NOTES
    return result


NOTES = [
    "Load: new edges as ALS entries into accesslog-ingest over gRPC (one stream per 0.25 s tick); "
    "an edge counts as sent when ingest answered its stream. Entries of a stream that failed "
    "(ingest down) are sent again at the next tick, as callers keep calling.",
    "recover_s: from the end of the fault until every Sidecar holds every edge sent up to it "
    "(read through the API every 0.25 s). lost_before_resend: edges still missing after settle_s "
    "that a repeated call brought back (an ingest killed with edges in its buffer). edges_lost: "
    "missing even after that (must be 0).",
    "duplicate_writes: successful Sidecar writes that changed nothing (the emulator's request "
    "log marks an update that made no new resourceVersion).",
]


def run(config: dict[str, Any], workdir: Path, only: list[str] | None = None) -> dict[str, Any]:
    return asyncio.run(_run(config, workdir, only))


# --- the table ----------------------------------------------------------------------------------


def rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    out = []
    for f in result.get("faults", []):
        if "error" in f:
            out.append(("faults", f["fault"], f"ERROR {f['error']}"[:160]))
            continue
        out.append(("faults", f["fault"], summary(f)))
    out.append(("faults", "edges lost, all runs", str(result.get("edges_lost_total"))))
    return out


def summary(f: dict[str, Any]) -> str:
    recover = f"{f['recover_s']:.1f} s" if f.get("recover_s") is not None else "not within settle"
    dlq = f.get("dead_letters")
    return (
        f"{f['edges_sent']} edges, lost {f['edges_lost']} (resent {f['lost_before_resend']}), "
        f"recovered in {recover}, {f['sidecar_writes']} Sidecar writes "
        f"({f['duplicate_writes']} duplicate), dead letters {dlq if dlq is not None else 'n/a'}"
    )


def markdown_table(result: dict[str, Any]) -> str:
    lines = [
        "| fault | edges sent | lost | recovered by a repeated call | time to recover | "
        "Sidecar writes (duplicate) | dead letters |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in result.get("faults", []):
        if "error" in f:
            lines.append(f"| {f['fault']} | error: {f['error'][:80]} | | | | | |")
            continue
        recover = f"{f['recover_s']:.1f} s" if f.get("recover_s") is not None else "-"
        lines.append(
            f"| {f['description']} | {f['edges_sent']} | {f['edges_lost']} | "
            f"{f['lost_before_resend']} | {recover} | {f['sidecar_writes']} "
            f"({f['duplicate_writes']}) | {f.get('dead_letters')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench faults", description=__doc__)
    parser.add_argument("--small", action="store_true", help="one kill each, shorter faults")
    parser.add_argument("--only", nargs="*", default=None, help="only these faults (names)")
    parser.add_argument("--out", type=Path, default=HERE, help="where results.json is")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--no-record", action="store_true", help="do not write results.json")
    args = parser.parse_args(argv)
    config = dict(SMALL if args.small else FULL)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lazyload-faults-"))
    t0, started = time.perf_counter(), time.strftime("%Y-%m-%dT%H:%M:%S%z")
    result = run(config, workdir, args.only)
    result["config"] = config
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    print(markdown_table(result))
    if not args.no_record:
        record(result, args.out, small=args.small, only=args.only, started=started)
    lost = result["edges_lost_total"] + sum(f.get("edges_lost", 0) for f in result["faults"])
    errors = [f for f in result["faults"] if "error" in f]
    return 1 if lost or errors else 0


def record(
    result: dict[str, Any], out: Path, *, small: bool, only: list[str] | None, started: str
) -> None:
    """Merge the run into results.json (the other benchmarks kept) as `faults`."""
    from bench import __main__ as bench_main
    from bench import common

    machine = common.machine()
    result["machine"] = {
        "cpu_model": machine["cpu_model"],
        "load_avg_at_start": machine["load_avg_at_start"],
    }
    result["reduced"] = small or bool(only)
    results = {
        "started_at": started,
        "configuration": "small" if small else "full",
        "overrides": {},
        "kube": "emulator",
        "machine": machine,
        "benchmarks": {"faults": result},
        "plots": {},
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    bench_main.write(results, out, merge=True)


if __name__ == "__main__":
    sys.exit(main())
