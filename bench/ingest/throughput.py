"""Ingest throughput: a real gRPC client drives the real accesslog-ingest server, against the raw
protobuf decode rate of the same messages, measured in the same run.

- Messages: `messages` distinct ALS messages of 100 HTTP entries each (callers are pods of a
  synthetic mesh of `services` Services, authorities short names, FQDNs, ClusterIPs, ServiceEntry
  and external hosts, some NR/UH flags, a few unknown callers), sent `repeat` times.
- Reference: `StreamAccessLogsMessage.FromString` + extraction of the fields the ingest reads
  (caller and original address, authority, upstream cluster, flags, code, headers, start time),
  single-threaded, over the same serialized messages.
- Server: `lazyload_accesslog_ingest.app.run()` with a pre-fed index (no Kubernetes), in its own
  process (so the client does not share its CPU), publishing to a real nats-server started here
  (`lazyload_testing.nats.start_nats_server`). 1 replica, then 2 replicas on two ports with the
  client's streams split between them.
- Measured, per pass over the messages: entries/s from the first write until every stream's
  response (the server answers a stream only after handling all its messages), and just before
  it the reference on the same messages; ratio = the reference's time / the pass's time, summed
  over the passes. Reported for the whole run, its first pass (every key and edge new: derived
  and published) and the later passes (steady state), by wall time and per CPU second. Each
  replica count runs `rounds` times on fresh replicas; the round with the median ratio is
  reported, with the range. The replicas are warmed up with messages of other Services first.
- Checked (correctness of the harness): every entry counted by the server
  (`lazyload_ingest_entries_total` from `/metrics`), and JetStream holds exactly the distinct edges
  the same messages give in-process (replicas collapse through `Nats-Msg-Id`).

Prints a table; writes `bench/results/ingest.json` (or `--output`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import random
import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import nats
import psutil
from envoy.service.accesslog.v3 import als_pb2
from lazyload_accesslog_ingest import app, indexing, ingesting, parsing, receiving
from lazyload_accesslog_ingest.settings import GrpcSettings, IngestSettings
from lazyload_common import subjects, tasks
from lazyload_common.settings import AdminSettings, NatsSettings
from lazyload_testing import ingest as t
from lazyload_testing.nats import start_nats_server

ENTRIES_PER_MESSAGE = 100
RESULTS = Path(__file__).resolve().parents[1] / "results" / "ingest.json"
GOAL = 0.60


@dataclass(frozen=True)
class Config:
    messages: int = 200
    """Distinct messages (of 100 entries)."""
    repeat: int = 10
    """Times the client sends the whole set."""
    streams: int = 4
    """Client streams per replica."""
    services: int = 200
    replicas: tuple[int, ...] = (1, 2)
    decode_rounds: int = 2
    """Passes of the raw decode reference over the messages before each measured pass (the best
    is kept)."""
    rounds: int = 3
    """Measurements per replica count, each on fresh replicas with its own reference measured
    just before it; the round with the median ratio is reported (this machine's speed drifts)."""
    seed: int = 7


SMALL = Config(messages=6, repeat=2, streams=2, services=10, decode_rounds=1, rounds=1)


# --- the synthetic mesh and its messages -----------------------------------------------------


def _pod_ip(i: int, j: int) -> str:
    return f"10.{1 + i // 250}.{i % 250}.{10 + j}"


def _cluster_ip(i: int) -> str:
    return f"10.96.{i // 250}.{i % 250 + 1}"


def build_index(services: int) -> indexing.ServiceIndex:
    """`services` Services `svc-<i>` in namespaces `ns-<i % 10>`, two pods each, and a
    ServiceEntry for `*.partner.example`."""
    index = indexing.ServiceIndex()
    for i in range(services):
        ns, name = f"ns-{i % 10}", f"svc-{i}"
        index.apply_service("ADDED", t.service(ns, name, _cluster_ip(i)))
        index.apply_endpoints("ADDED", t.endpoints(ns, name, [_pod_ip(i, 0), _pod_ip(i, 1)]))
    index.apply_service_entry("ADDED", t.service_entry("egress", "partner", ["*.partner.example"]))
    return index


def build_messages(config: Config, offset: int = 0) -> list[bytes]:
    """The messages; their Services are `svc-<offset>` .. `svc-<offset + services - 1>` (the
    warm-up uses a range of its own, so that it teaches nothing the measured messages do)."""
    rng = random.Random(config.seed)
    n = config.services
    services = range(offset, offset + n)
    fanout = {i: rng.sample(services, k=min(n, 8)) for i in services}  # each calls 8 others
    out: list[bytes] = []
    for _ in range(config.messages):
        entries = []
        for _ in range(ENTRIES_PER_MESSAGE):
            caller = offset + rng.randrange(n)
            callee = rng.choice(fanout[caller])
            ns = f"ns-{callee % 10}"
            roll = rng.random()
            if roll < 0.4:
                authority = f"svc-{callee}.{ns}:9080"
            elif roll < 0.6:
                authority = f"svc-{callee}.{ns}.svc.cluster.local:9080"
            elif roll < 0.7:
                authority = f"{_cluster_ip(callee)}:9080"
            elif roll < 0.8:
                authority = f"api{callee % 3}.partner.example"
            elif roll < 0.9:
                authority = f"www.site{callee % 5}.example.com:443"
            else:
                authority = f"svc-{callee}:9080"
            flags = ["NR"] if roll > 0.98 else (["UH"] if roll > 0.96 else [])
            caller_ip = "10.250.0.1" if rng.random() < 0.01 else _pod_ip(caller, rng.randrange(2))
            entries.append(
                t.http_entry(
                    authority,
                    caller=caller_ip,
                    flags=flags,
                    code=404 if "NR" in flags else 200,
                    headers={"x-request-id": f"{rng.getrandbits(64):x}"},
                    upstream_cluster=f"outbound|9080||svc-{callee}.{ns}.svc.cluster.local",
                )
            )
        out.append(t.message(*entries).SerializeToString())
    return out


def expected_edges(config: Config, messages: list[bytes]) -> int:
    """Distinct edge keys the messages give, computed in-process with the same domain code."""
    ingestor = ingesting.Ingestor(build_index(config.services))
    keys: set[str] = set()
    stream = ingesting.StreamState()
    for raw in messages:
        keys.update(e.edge_key for e in ingestor.ingest(raw, stream).edges)
    return len(keys)


# --- the reference: raw decode ---------------------------------------------------------------


def _extract(raw: bytes) -> int:
    msg = als_pb2.StreamAccessLogsMessage.FromString(raw)
    n = 0
    for entry in msg.http_logs.log_entry:
        common = entry.common_properties
        remote = common.downstream_direct_remote_address.socket_address
        local = common.downstream_local_address.socket_address
        request = entry.request
        flags = common.response_flags
        _ = (
            remote.address,
            remote.port_value,
            local.address,
            request.authority,
            common.upstream_cluster,
            flags.no_route_found,
            flags.no_cluster_found,
            entry.response.response_code.value,
            request.request_headers.get("slime-source-ns"),
            common.start_time.seconds,
        )
        n += 1
    return n


def raw_decode_times(messages: list[bytes], rounds: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of decode + field extraction of `messages`, each the best of
    `rounds` passes."""
    best_wall = best_cpu = float("inf")
    for _ in range(max(1, rounds)):
        start, cpu = time.perf_counter(), time.process_time()
        for raw in messages:
            _extract(raw)
        best_wall = min(best_wall, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best_wall, max(best_cpu, 1e-9)


# --- the server, in a child process ----------------------------------------------------------


def _serve(nats_url: str, services: int, conn: Any) -> None:
    """Child process: `app.run` with a pre-fed index until the parent says stop (the heap
    frozen first, as the service's console script does)."""
    tasks.freeze_heap()

    async def main() -> None:
        settings = IngestSettings(
            nats=NatsSettings(url=nats_url),
            admin=AdminSettings(host="127.0.0.1", port=0),
            grpc=GrpcSettings(host="127.0.0.1", port=0),
            reporter=f"bench-{os.getpid()}",
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        bound: list[app.BoundPorts] = []
        ready = asyncio.Event()

        def wait_parent() -> None:
            conn.recv()
            loop.call_soon_threadsafe(stop.set)

        task = asyncio.create_task(
            app.run(
                settings,
                stop=stop,
                ready=ready,
                on_bound=bound.append,
                index=build_index(2 * services),
            )
        )
        await ready.wait()
        conn.send((bound[0].grpc, bound[0].admin))
        threading.Thread(target=wait_parent, daemon=True).start()
        await task

    asyncio.run(main())


class Replica:
    """One ingest server process; `start_all` spawns several at once (each spawn re-imports the
    service, seconds on a busy machine) and waits until all listen."""

    def __init__(self, nats_url: str, services: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(nats_url, services, child), daemon=True)
        self.process.start()
        self.grpc_port = self.admin_port = 0

    def wait_ready(self) -> None:
        if self.grpc_port:
            return
        if not self.conn.poll(60):
            raise TimeoutError("ingest replica did not start")
        self.grpc_port, self.admin_port = self.conn.recv()

    @classmethod
    def start_all(cls, count: int, nats_url: str, services: int) -> list[Replica]:
        replicas: list[Replica] = [cls(nats_url, services) for _ in range(count)]
        try:
            for r in replicas:
                r.wait_ready()
        except BaseException:
            stop_all(replicas)
            raise
        return replicas

    def metric(self, name: str, labels: str = "") -> float:
        text = httpx.get(f"http://127.0.0.1:{self.admin_port}/metrics", timeout=10).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + labels + " ") or (not labels and line.startswith(name + "{")):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def cpu_seconds(self) -> float:
        """CPU time (user + system, all threads: gRPC's included) the replica has used so far."""
        times = psutil.Process(self.process.pid).cpu_times()
        return float(times.user + times.system)

    def stop(self) -> None:
        stop_all([self])


def stop_all(replicas: list[Replica]) -> None:
    """Ask every replica to stop (they shut down in parallel), then wait for each."""
    for r in replicas:
        if r.process.is_alive():
            with contextlib.suppress(OSError):
                r.conn.send("stop")
    for r in replicas:
        r.process.join(20)
        if r.process.is_alive():
            r.process.kill()


# --- the client --------------------------------------------------------------------------------


async def _stream(channel: grpc.aio.Channel, ident: bytes, messages: list[bytes]) -> None:
    method = channel.stream_unary(
        receiving.METHOD_PATH,
        request_serializer=None,
        response_deserializer=als_pb2.StreamAccessLogsResponse.FromString,
    )
    call = method()
    await call.write(ident)
    for raw in messages:
        await call.write(raw)
    await call.done_writing()
    await call


async def drive(ports: list[int], messages: list[bytes], repeat: int, streams: int) -> float:
    """Send `messages` x `repeat` over `streams` streams per port; seconds taken."""
    ident = t.message(ident=t.identifier()).SerializeToString()
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for port in ports]
    try:
        lanes = [(ch, []) for ch in channels for _ in range(streams)]
        for r in range(repeat):
            for i, raw in enumerate(messages):
                lanes[(r * len(messages) + i) % len(lanes)][1].append(raw)
        for ch in channels:
            await ch.channel_ready()
        start = time.perf_counter()
        await asyncio.gather(*(_stream(ch, ident, msgs) for ch, msgs in lanes))
        return time.perf_counter() - start
    finally:
        for ch in channels:
            await ch.close()


async def _stream_messages(nats_url: str) -> int:
    nc = await nats.connect(nats_url)
    try:
        info = await nc.jetstream().stream_info(subjects.DEPS_STREAM)
        return int(info.state.messages)
    finally:
        await nc.close()


async def _purge(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        with contextlib.suppress(Exception):
            await js.delete_stream(subjects.DEPS_STREAM)
    finally:
        await nc.close()


def _stable_stream_messages(nats_url: str) -> int:
    """The dependency stream's message count once it stopped growing for 0.5 s."""
    last, stable_since = -1, time.monotonic()
    deadline = stable_since + 30
    while time.monotonic() < deadline:
        count = asyncio.run(_stream_messages(nats_url))
        if count != last:
            last, stable_since = count, time.monotonic()
        elif time.monotonic() - stable_since >= 0.5:
            break
        time.sleep(0.1)
    return last


def measure_replicas(
    count: int,
    nats_url: str,
    config: Config,
    messages: list[bytes],
    expected: int,
    spawned: list[Replica] | None = None,
) -> dict[str, Any]:
    """One measured run with `count` replicas (`spawned`: started on an empty JetStream, maybe
    still importing): `repeat` passes over the messages, each paired with the reference decoding
    the same messages just before it (this machine's speed drifts by tens of per cent within
    seconds; a ratio of adjacent measurements does not).

    Two phases, reported apart: the first pass (every entry key and edge is new: derived, then
    published) and the other `repeat - 1` passes (steady state: keys cached, edges
    deduplicated). The replicas are warmed up first with messages between other Services
    (code paths and connections, not the caches; the server's index holds both sets)."""
    if spawned is None:
        asyncio.run(_purge(nats_url))  # before the replicas, which create the stream
        replicas = Replica.start_all(count, nats_url, config.services)
    else:
        replicas = spawned
        for r in replicas:
            r.wait_ready()
    ports = [r.grpc_port for r in replicas]
    try:
        warm = Config(**{**asdict(config), "messages": max(2, config.messages // 10)})
        asyncio.run(drive(ports, build_messages(warm, offset=config.services), 1, 1))
        baseline = _stable_stream_messages(nats_url)  # the warm-up's edges
        before = sum(r.metric("lazyload_ingest_entries_total") for r in replicas)
        # per pass: the reference's time for the same messages, measured just before it
        phases = {"first": [0, 0.0, 0.0, 0.0, 0.0], "steady": [0, 0.0, 0.0, 0.0, 0.0]}
        for i in range(config.repeat):
            raw_wall, raw_cpu = raw_decode_times(messages, config.decode_rounds)
            cpu_before = sum(r.cpu_seconds() for r in replicas)
            seconds = asyncio.run(drive(ports, messages, 1, config.streams))
            cpu = sum(r.cpu_seconds() for r in replicas) - cpu_before
            phase = phases["first" if i == 0 else "steady"]
            for k, v in enumerate(
                (len(messages) * ENTRIES_PER_MESSAGE, seconds, cpu, raw_wall, raw_cpu)
            ):
                phase[k] += v
        counted = sum(r.metric("lazyload_ingest_entries_total") for r in replicas) - before
        deadline = time.monotonic() + 30
        published = asyncio.run(_stream_messages(nats_url)) - baseline
        while published < expected and time.monotonic() < deadline:
            time.sleep(0.1)
            published = asyncio.run(_stream_messages(nats_url)) - baseline
        time.sleep(0.3)
        published = asyncio.run(_stream_messages(nats_url)) - baseline
        per_replica = [int(r.metric("lazyload_ingest_edges_published_total")) for r in replicas]
    finally:
        stop_all(replicas)

    def rates(n: int, wall: float, cpu: float, raw_wall: float, raw_cpu: float) -> dict[str, float]:
        return {
            "entries": n,
            "entries_per_s": n / wall,
            "entries_per_cpu_s": n / max(cpu, 1e-9),
            "raw_decode_entries_per_s": n / raw_wall,
            "raw_decode_entries_per_cpu_s": n / raw_cpu,
            "ratio_to_raw_decode": raw_wall / wall,
            "cpu_ratio_to_raw_decode": raw_cpu / max(cpu, 1e-9),
        }

    first, steady = phases["first"], phases["steady"]
    whole = [a + b for a, b in zip(first, steady, strict=True)]
    return {
        "replicas": count,
        "seconds": whole[1],
        "server_cpu_seconds": whole[2],
        **rates(*whole),
        "first_pass": rates(*first),
        "steady": rates(*steady) if steady[0] else None,
        "entries_counted_by_server": int(counted),
        "edges_expected": expected,
        "edges_in_jetstream": published,
        "edges_published_per_replica": per_replica,
    }


def measure_rounds(
    count: int,
    nats_url: str,
    config: Config,
    messages: list[bytes],
    expected: int,
    spawned: list[Replica] | None = None,
) -> dict[str, Any]:
    """`config.rounds` runs of `measure_replicas`; the one with the median ratio, plus the
    range of the ratios of all rounds."""
    rounds = [
        measure_replicas(
            count, nats_url, config, messages, expected, spawned=spawned if i == 0 else None
        )
        for i in range(max(1, config.rounds))
    ]
    ordered = sorted(rounds, key=lambda r: r["ratio_to_raw_decode"])
    chosen = dict(ordered[len(ordered) // 2])
    chosen["rounds"] = len(rounds)
    for ratio in ("ratio_to_raw_decode", "cpu_ratio_to_raw_decode"):
        values = [r[ratio] for r in rounds]
        chosen[ratio.replace("_to_raw_decode", "_range")] = [min(values), max(values)]
    chosen["correct"] = all(
        r["entries_counted_by_server"] == r["entries"]
        and r["edges_in_jetstream"] == r["edges_expected"]
        for r in rounds
    )
    return chosen


# --- run, report ---------------------------------------------------------------------------------


def run_config(config: Config, workdir: Path | None = None) -> dict[str, Any]:
    scratch = Path(workdir or tempfile.mkdtemp(prefix="lazyload-bench-ingest-"))
    scratch.mkdir(parents=True, exist_ok=True)
    server = start_nats_server(scratch / "nats")
    # the first replicas import the service (seconds) while the messages are made
    asyncio.run(_purge(server.url))
    first = [Replica(server.url, config.services) for _ in range(config.replicas[0])]
    try:
        messages = build_messages(config)
        expected = expected_edges(config, messages)
        runs = [
            measure_rounds(
                n, server.url, config, messages, expected, spawned=first if i == 0 else None
            )
            for i, n in enumerate(config.replicas)
        ]
    finally:
        stop_all(first)
        server.stop()
        shutil.rmtree(scratch / "nats", ignore_errors=True)
    base = runs[0]["entries_per_s"]
    for r in runs:
        r["speedup_vs_1_replica"] = r["entries_per_s"] / base
    one = runs[0]
    return {
        "benchmark": "ingest",
        "config": asdict(config),
        "entries_per_message": ENTRIES_PER_MESSAGE,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "decoder": parsing.resolve(
            IngestSettings().decoder
        ),  # LAZYLOAD_DECODER reaches the replicas
        "raw_decode_entries_per_s": one["raw_decode_entries_per_s"],
        "raw_decode_entries_per_cpu_s": one["raw_decode_entries_per_cpu_s"],
        "entries_per_s": one["entries_per_s"],
        "ratio_to_raw_decode": one["ratio_to_raw_decode"],
        "cpu_ratio_to_raw_decode": one["cpu_ratio_to_raw_decode"],
        "goal_ratio": GOAL,
        "goal_met": one["ratio_to_raw_decode"] >= GOAL,
        "goal_met_by_cpu": one["cpu_ratio_to_raw_decode"] >= GOAL,
        "runs": runs,
        "correct": all(r["correct"] for r in runs),
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        f"ALS decoder: {result['decoder']}; each run is the median of "
        f"{result['runs'][0]['rounds']} round(s), each with its reference measured just before it",
        f"{'what':<40}{'entries/s':>12}{'ratio':>8}{'per CPU s':>12}{'ratio':>8}"
        f"{'x 1 rep':>9}{'edges':>8}",
    ]
    for r in result["runs"]:
        lines.append(
            f"{'raw protobuf decode (reference)':<40}{r['raw_decode_entries_per_s']:>12,.0f}"
            f"{'100%':>8}{r['raw_decode_entries_per_cpu_s']:>12,.0f}{'100%':>8}"
        )
        name = f"gRPC -> ingest, {r['replicas']} replica(s)"
        phases = [(name, r), ("  first pass (all keys, edges new)", r["first_pass"])]
        if r["steady"] is not None:
            phases.append(("  later passes (steady state)", r["steady"]))
        for label, p in phases:
            extra = (
                f"{r['speedup_vs_1_replica']:>9.2f}{r['edges_in_jetstream']:>8}" if p is r else ""
            )
            lines.append(
                f"{label:<40}{p['entries_per_s']:>12,.0f}{p['ratio_to_raw_decode']:>8.0%}"
                f"{p['entries_per_cpu_s']:>12,.0f}{p['cpu_ratio_to_raw_decode']:>8.0%}{extra}"
            )
        low, high = r["ratio_range"]
        lines.append(f"{'  ratio (wall) over the rounds':<40}{low:>20.0%} .. {high:.0%}")
    lines.append(
        f"goal >= {GOAL:.0%} of raw: wall {'met' if result['goal_met'] else 'NOT met'}, "
        f"per CPU second {'met' if result['goal_met_by_cpu'] else 'NOT met'}; "
        f"harness correct: {result['correct']}"
    )
    return "\n".join(lines)


def run(small: bool = False, workdir: Path | None = None) -> dict[str, Any]:
    """What `python -m bench` calls: run, print, write `bench/results/ingest.json`."""
    result = run_config(SMALL if small else Config(), workdir)
    print(table(result), flush=True)
    _write(result, RESULTS)
    return result


def _write(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__)
    parser.add_argument("--small", action="store_true", help="tiny configuration (harness check)")
    parser.add_argument("--messages", type=int)
    parser.add_argument("--repeat", type=int)
    parser.add_argument("--streams", type=int)
    parser.add_argument("--services", type=int)
    parser.add_argument("--replicas", type=int, nargs="+")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args(argv)
    config = SMALL if args.small else Config()
    overrides = {
        k: v
        for k, v in {
            "messages": args.messages,
            "repeat": args.repeat,
            "streams": args.streams,
            "services": args.services,
            "replicas": tuple(args.replicas) if args.replicas else None,
        }.items()
        if v is not None
    }
    config = Config(**{**asdict(config), **overrides})
    result = run_config(config, args.workdir)
    print(table(result), flush=True)
    _write(result, args.output)
    return 0 if result["correct"] else 1
