"""`python -m bench soak [--minutes 30]`: the full stack for a long while at a steady mixed load,
with the memory, open file descriptors and asyncio tasks of every service sampled (issue 19).

The stack is `make faults`' (`bench/faults_stack.py`: nats-server, the Kubernetes API emulator,
the four services, a supervisor), with eager auto-fence off so that a fence exists only while its
caller has learned something. The load, every `tick` seconds, as one ALS stream into
accesslog-ingest (the global-sidecar's path):

- new edges at `rate`/s: caller c -> a destination c's Sidecar does not hold, of c's own
  `dests_per_caller` (so the edge space is bounded, as in a real mesh: after the warm-up the
  services' per-edge memory is full and only a leak grows); an edge is called as new again only
  when c last called it more than ingest's dedup refresh interval (`refresh_s`, given to ingest)
  ago plus a margin, so ingest publishes it again (sooner it would be a duplicate it drops);
- repeated edges at `repeat_rate`/s (an edge already learned, again: ingest's dedup path);
- a fence edit every `edit_every_s` (a static host added to or removed from `spec.host`);
- deletes: the callers are split into `groups`; every `round_s` one group is retired: no more
  calls from it, its Sidecars must hold exactly what it learned plus its static hosts
  (`converge_s`), its ServiceFences are deleted, its Sidecars must go (`delete_s`), then it calls
  again from nothing. So the learned state stays bounded and a leak shows as growth.

Every `sample_s` the RSS and open fds of each service's process (psutil) and its asyncio tasks
(`lazyload_asyncio_tasks` on its /metrics) are sampled; nats-server and the emulator are sampled
too, for the record. The first half of the run is the warm-up; over the second half the
least-squares slope of each series decides (`GROWTH_RULE`): RSS below `RSS_SLOPE_MB_MIN` MB/min,
open fds and tasks growing by at most `FDS_GROWTH` / `TASKS_GROWTH` over the half (slope x half).
At the end the load stops and every caller's Sidecar must hold exactly its truth.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.faults_load import _ident, send_edges
from bench.faults_stack import (
    DEST_NAMESPACE,
    NAMESPACE,
    SERVICES,
    FaultStack,
    caller_name,
    dest_fqdn,
)

HERE = Path(__file__).resolve().parent

FULL: dict[str, Any] = {
    "minutes": 30.0,
    "rate": 5.0,
    "repeat_rate": 20.0,
    "edit_every_s": 2.0,
    "callers": 40,
    "groups": 5,
    "round_s": 60.0,
    "statics": 10,
    "dests_per_caller": 60,
    "refresh_s": 300.0,
    "sample_s": 10.0,
    "tick": 0.5,
}
RSS_SLOPE_MB_MIN = 0.5
FDS_GROWTH = 2.0
TASKS_GROWTH = 5.0
GROWTH_RULE = (
    f"over the second half: RSS slope <= {RSS_SLOPE_MB_MIN} MB/min, open fds growth <= "
    f"{FDS_GROWTH:g} and asyncio tasks growth <= {TASKS_GROWTH:g} (least-squares slope x half)"
)
FENCES = f"/apis/microservice.slime.io/v1alpha1/namespaces/{NAMESPACE}/servicefences"
SIDECARS = f"/apis/networking.istio.io/v1/namespaces/{NAMESPACE}/sidecars"
SAMPLED = (*SERVICES, "nats-server", "kube-emulator")


def destinations_needed(config: dict[str, Any]) -> int:
    """Destination Services to register: the learned ones (every caller has its own window of
    `dests_per_caller` of them, shifted by its index) plus the static hosts of the fence edits."""
    return int(config["dests_per_caller"]) + int(config["callers"]) + int(config["statics"])


def reuse_after(config: dict[str, Any]) -> float:
    """Seconds after which an edge a caller called may be called as new again: past ingest's
    refresh interval (then it publishes it again), with a margin."""
    return float(config["refresh_s"]) + max(2.0, 0.1 * float(config["refresh_s"]))


class Truth:
    """What each caller's Sidecar must hold, by destination index: learned plus static."""

    def __init__(self, callers: int, statics: list[int], per_caller: int) -> None:
        self.learned: dict[int, set[int]] = {c: set() for c in range(callers)}
        self.static: dict[int, set[int]] = {c: set() for c in range(callers)}
        self.cursor = dict.fromkeys(range(callers), 0)
        self.statics = statics
        self.per_caller = per_caller
        self.last_sent: dict[tuple[int, int], float] = {}
        """(caller, destination) -> when it was last called (new or repeated)."""

    def next_new(self, c: int, now: float, reuse_after: float) -> int | None:
        """The next destination of caller c's window its Sidecar does not hold and that it has
        not called for `reuse_after` seconds; None when there is none now."""
        for _ in range(self.per_caller):
            j = c + self.cursor[c] % self.per_caller
            self.cursor[c] += 1
            last = self.last_sent.get((c, j))
            if j not in self.learned[c] and (last is None or now - last > reuse_after):
                return j
        return None

    def expected(self, c: int) -> set[str]:
        return {dest_fqdn(j) for j in self.learned[c] | self.static[c]}


class Soak:
    def __init__(self, stack: FaultStack, config: dict[str, Any]) -> None:
        self.stack, self.config = stack, config
        self.callers = int(config["callers"])
        first_static = stack.destinations - int(config["statics"])
        statics = list(range(first_static, stack.destinations))
        self.truth = Truth(self.callers, statics, int(config["dests_per_caller"]))
        self.reuse_after = reuse_after(config)
        self.retired: set[int] = set()
        self.lock = asyncio.Lock()
        self.rng = random.Random(19)
        self.counts = dict.fromkeys(
            (
                "edges_new",
                "edges_new_again",
                "edges_repeated",
                "fence_edits",
                "fences_deleted",
                "failed_streams",
            ),
            0,
        )
        self.rounds: list[dict[str, Any]] = []
        self.kube = httpx.AsyncClient(base_url=stack.kube_api_url, timeout=10)

    def active(self) -> list[int]:
        return [c for c in range(self.callers) if c not in self.retired]

    # -- the load ------------------------------------------------------------------------------

    async def load(self, stop: asyncio.Event) -> None:
        import grpc

        tick = float(self.config["tick"])
        carry = {"new": 0.0, "repeat": 0.0, "edit": 0.0}
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.stack.als_port}")
        ident = _ident()
        try:
            while not stop.is_set():
                carry["new"] += self.config["rate"] * tick
                carry["repeat"] += self.config["repeat_rate"] * tick
                carry["edit"] += tick / self.config["edit_every_s"]
                async with self.lock:
                    active = self.active()
                    now = time.monotonic()
                    new: list[tuple[int, int]] = []
                    for _ in range(int(carry["new"])):
                        c = self.rng.choice(active)
                        j = self.truth.next_new(c, now, self.reuse_after)
                        if j is not None and (c, j) not in new:
                            new.append((c, j))
                    carry["new"] -= int(carry["new"])  # none free now: the rate is not caught up
                    known = [(c, j) for c in active for j in self.truth.learned[c]]
                    repeats = self.rng.sample(known, min(len(known), int(carry["repeat"])))
                    try:
                        await self._send(channel, ident, new + repeats)
                    except Exception:  # the service restarting: the callers call again
                        self.counts["failed_streams"] += 1
                        await channel.close()
                        channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.stack.als_port}")
                    else:
                        carry["repeat"] -= int(carry["repeat"])
                        again = sum((c, j) in self.truth.last_sent for c, j in new)
                        self.counts["edges_new_again"] += again
                        for c, j in new + repeats:
                            self.truth.last_sent[(c, j)] = now
                        for c, j in new:
                            self.truth.learned[c].add(j)
                        self.counts["edges_new"] += len(new)
                        self.counts["edges_repeated"] += len(repeats)
                    while carry["edit"] >= 1:
                        carry["edit"] -= 1
                        await self._edit(active)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), tick)
        finally:
            await channel.close()

    async def _send(self, channel: Any, ident: bytes, edges: list[tuple[int, int]]) -> None:
        if not edges:
            return
        now = time.time()
        await send_edges(channel, ident, [(c, j, f"{c}-{j}-{now}") for c, j in edges])

    async def _edit(self, active: list[int]) -> None:
        """Add or remove a static host of an active caller's fence (one that exists: a fence
        is made by its caller's first learned edge)."""
        candidates = [c for c in active if self.truth.learned[c]]
        if not candidates:
            return
        c = self.rng.choice(candidates)
        j = self.rng.choice(self.truth.statics)
        remove = j in self.truth.static[c]
        patch = {"spec": {"host": {dest_fqdn(j): None if remove else {"stable": {}}}}}
        response = await self.kube.patch(
            f"{FENCES}/{caller_name(c)}",
            content=json.dumps(patch),
            headers={"Content-Type": "application/merge-patch+json"},
        )
        if response.status_code == 404:
            return  # not made yet (its first edge is still on its way)
        response.raise_for_status()
        (self.truth.static[c].discard if remove else self.truth.static[c].add)(j)
        self.counts["fence_edits"] += 1

    # -- rounds: retire a group, check it, delete its fences -----------------------------------

    async def rounds_loop(self, stop: asyncio.Event) -> None:
        groups = int(self.config["groups"])
        n = 0
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config["round_s"])
            if stop.is_set():
                return
            group = [c for c in range(self.callers) if c % groups == n % groups]
            self.rounds.append(await self.retire(group))
            n += 1

    async def retire(self, group: list[int]) -> dict[str, Any]:
        async with self.lock:  # no stream of the group in flight after this
            self.retired.update(group)
        t0 = time.monotonic()
        mismatch = await self.wait_match(group, timeout=120)
        converge = time.monotonic() - t0
        for c in group:
            response = await self.kube.delete(f"{FENCES}/{caller_name(c)}")
            if response.status_code != 404:
                response.raise_for_status()
                self.counts["fences_deleted"] += 1
        t1 = time.monotonic()
        async with self.lock:
            for c in group:
                self.truth.learned[c].clear()
                self.truth.static[c].clear()
        left = await self.wait_match(group, timeout=120)
        deleted = time.monotonic() - t1
        async with self.lock:
            self.retired.difference_update(group)
        return {
            "at_s": round(time.monotonic() - self.t0, 1),
            "callers": len(group),
            "converge_s": round(converge, 2),
            "mismatched_before_delete": mismatch,
            "delete_s": round(deleted, 2),
            "left_after_delete": left,
        }

    async def sidecar_hosts(self) -> dict[str, set[str]]:
        """The load's hosts (destination Services) each Sidecar of the namespace holds."""
        response = await self.kube.get(SIDECARS)
        response.raise_for_status()
        suffix = f".{DEST_NAMESPACE}.svc.cluster.local"
        return {
            s["metadata"]["name"]: {
                h.split("/", 1)[-1]
                for e in s["spec"].get("egress", [])
                for h in e.get("hosts", [])
                if h.endswith(suffix)
            }
            for s in response.json().get("items", [])
        }

    async def mismatches(self, callers: list[int]) -> dict[str, Any]:
        """Callers whose Sidecar differs from the truth: hosts missing and hosts extra."""
        have = await self.sidecar_hosts()
        out: dict[str, Any] = {}
        for c in callers:
            want = self.truth.expected(c)
            got = have.get(caller_name(c), set())
            if want != got:
                out[caller_name(c)] = {"missing": len(want - got), "extra": len(got - want)}
        return out

    async def wait_match(self, callers: list[int], *, timeout: float) -> int:
        """Wait until the callers' Sidecars equal the truth; how many still differ after it."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(httpx.HTTPError):
                wrong = await self.mismatches(callers)
                if not wrong or time.monotonic() > deadline:
                    return len(wrong)
            await asyncio.sleep(0.5)

    # -- the run -------------------------------------------------------------------------------

    async def run(self, seconds: float, sampler: Sampler) -> dict[str, Any]:
        self.t0 = time.monotonic()
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(self.load(stop), name="load"),
            asyncio.create_task(self.rounds_loop(stop), name="rounds"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, timeout=seconds, return_when="FIRST_EXCEPTION")
            for task in done:
                task.result()  # a driver that failed fails the run
        except asyncio.CancelledError:  # Ctrl-C: no round is waited for to the end
            for task in tasks:
                task.cancel()
            raise
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        load_s = time.monotonic() - self.t0
        sampler.stop()
        t1 = time.monotonic()
        final = await self.wait_match(list(range(self.callers)), timeout=120)
        detail = await self.mismatches(list(range(self.callers)))
        await self.kube.aclose()
        learned = sum(len(v) for v in self.truth.learned.values())
        static = sum(len(v) for v in self.truth.static.values())
        return {
            "load_s": round(load_s, 1),
            **self.counts,
            "rounds": len(self.rounds),
            "round_converge_s_max": max((r["converge_s"] for r in self.rounds), default=None),
            "round_delete_s_max": max((r["delete_s"] for r in self.rounds), default=None),
            "round_mismatches": sum(
                r["mismatched_before_delete"] + r["left_after_delete"] for r in self.rounds
            ),
            "round_log": self.rounds,
            "final_converge_s": round(time.monotonic() - t1, 1),
            "truth_hosts": learned + static,
            "truth_mismatched_callers": final,
            "truth_mismatch_detail": detail,
        }


class Sampler:
    """Every `interval` seconds: RSS (MB) and open fds of each process (the current pid: the
    supervisor may have restarted it) and the asyncio tasks of each service (its /metrics)."""

    def __init__(self, stack: FaultStack, interval: float) -> None:
        self.stack, self.interval = stack, interval
        self.series: dict[str, list[list[float | None]]] = {name: [] for name in SAMPLED}
        self.restarts0 = len(stack.restarts)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="soak-sampler")
        self.t0 = time.monotonic()

    def start(self) -> Sampler:
        self.t0 = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> None:
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join()

    def _run(self) -> None:
        with httpx.Client(timeout=2.0) as client:
            while True:
                self.sample(client)
                if self._stop.wait(self.interval):
                    return

    def sample(self, client: httpx.Client) -> None:
        t = round(time.monotonic() - self.t0, 1)
        for name in SAMPLED:
            try:
                process = psutil.Process(self.stack.pid(name))
                rss: float | None = process.memory_info().rss / 2**20
                fds: float | None = float(process.num_fds())
            except (psutil.Error, KeyError, ValueError):
                rss = fds = None
            tasks = tasks_of(client, self.stack.admin(name)) if name in SERVICES else None
            self.series[name].append([t, _round(rss), fds, tasks])


def tasks_of(client: httpx.Client, admin: str) -> float | None:
    try:
        text = client.get(admin + "/metrics").text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith("lazyload_asyncio_tasks "):
            return float(line.split()[1])
    return None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def slope_per_min(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, per minute."""
    if len(points) < 2:
        return None
    n = len(points)
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    sxx = sum((p[0] - mx) ** 2 for p in points)
    if sxx == 0:
        return None
    return 60 * sum((p[0] - mx) * (p[1] - my) for p in points) / sxx


def judge(series: dict[str, list[list[float | None]]], seconds: float) -> dict[str, Any]:
    """Per process: first, end of warm-up, last and peak of each series, and the slope over the
    second half; for the services, whether it grew by `GROWTH_RULE`."""
    half = seconds / 2
    out: dict[str, Any] = {}
    for name, rows in series.items():
        entry: dict[str, Any] = {"samples": len(rows)}
        for k, metric in ((1, "rss_mb"), (2, "fds"), (3, "tasks")):
            pairs = ((r[0], r[k]) for r in rows)
            values = [(t, v) for t, v in pairs if t is not None and v is not None]
            if not values:
                continue
            late = [(t, v) for t, v in values if t >= half]
            slope = slope_per_min(late)
            entry[metric] = {
                "first": values[0][1],
                "warm": late[0][1] if late else None,
                "last": values[-1][1],
                "max": max(v for _, v in values),
                "slope_per_min": None if slope is None else round(slope, 3),
                "growth_second_half": None if slope is None else round(slope * half / 60, 2),
            }
        if name in SERVICES:
            entry["grew"] = grew(entry)
        out[name] = entry
    return out


def grew(entry: dict[str, Any]) -> list[str]:
    """The series of one service that broke the rule ([] = flat)."""
    bad = []
    rss, fds, tasks = (entry.get(k) or {} for k in ("rss_mb", "fds", "tasks"))
    if rss.get("slope_per_min") is None or rss["slope_per_min"] > RSS_SLOPE_MB_MIN:
        bad.append("rss")
    if fds.get("growth_second_half") is None or fds["growth_second_half"] > FDS_GROWTH:
        bad.append("fds")
    if tasks.get("growth_second_half") is None or tasks["growth_second_half"] > TASKS_GROWTH:
        bad.append("tasks")
    return bad


def run(config: dict[str, Any], workdir: Path) -> dict[str, Any]:
    seconds = float(config["minutes"]) * 60
    stack = FaultStack(
        workdir,
        callers=int(config["callers"]),
        destinations=destinations_needed(config),
        extra_env={
            "LAZYLOAD_FENCE__EAGER": "false",
            "LAZYLOAD_LOG_LEVEL": "WARNING",
            "LAZYLOAD_DEDUP__REFRESH_INTERVAL": str(config["refresh_s"]),
        },
    )
    t0 = time.monotonic()
    with stack:
        start_s = time.monotonic() - t0
        sampler = Sampler(stack, float(config["sample_s"])).start()
        soak = Soak(stack, config)
        try:
            result = asyncio.run(soak.run(seconds, sampler))
        finally:
            sampler.stop()
        restarts = [name for _, name in stack.restarts]
    result |= {
        "start_s": round(start_s, 1),
        "destinations": stack.destinations,
        "restarts": restarts,
        "growth_rule": GROWTH_RULE,
        "processes": judge(sampler.series, result["load_s"]),
        "series": {name: rows for name, rows in sampler.series.items()},
    }
    result["grew"] = {
        name: entry["grew"] for name, entry in result["processes"].items() if entry.get("grew")
    }
    result["ok"] = (
        not result["grew"]
        and result["truth_mismatched_callers"] == 0
        and result["round_mismatches"] == 0
        and not restarts
    )
    return result


def rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    out = [
        (
            "soak",
            "load",
            f"{result['load_s'] / 60:.0f} min: {result['edges_new']} new edges "
            f"({result.get('edges_new_again', 0)} of them called before a delete), "
            f"{result['edges_repeated']} repeated, {result['fence_edits']} fence edits, "
            f"{result['fences_deleted']} fences deleted in {result['rounds']} rounds",
        ),
        (
            "soak",
            "Sidecars = truth",
            f"{result['truth_mismatched_callers']} callers differ at the end, "
            f"{result['round_mismatches']} in the rounds; restarts {len(result['restarts'])}",
        ),
    ]
    for name in SERVICES:
        entry = result["processes"].get(name, {})
        out.append(("soak", name, process_summary(entry)))
    out.append(("soak", "growth", "none" if not result["grew"] else json.dumps(result["grew"])))
    return out


def process_summary(entry: dict[str, Any]) -> str:
    rss, fds, tasks = (entry.get(k) or {} for k in ("rss_mb", "fds", "tasks"))
    return (
        f"RSS {rss.get('warm')} -> {rss.get('last')} MB ({rss.get('slope_per_min')} MB/min), "
        f"fds {fds.get('warm')} -> {fds.get('last')}, tasks {tasks.get('warm')} -> "
        f"{tasks.get('last')} (max {tasks.get('max')})"
    )


def markdown_table(result: dict[str, Any]) -> str:
    lines = [
        "| service | RSS after warm-up -> end (MB) | RSS slope, 2nd half (MB/min) | open fds "
        "| asyncio tasks (max) | grew |",
        "|---|---|---|---|---|---|",
    ]
    for name in SAMPLED:
        entry = result["processes"].get(name, {})
        rss, fds, tasks = (entry.get(k) or {} for k in ("rss_mb", "fds", "tasks"))
        task_text = (
            f"{_g(tasks.get('warm'))} -> {_g(tasks.get('last'))} ({_g(tasks.get('max'))})"
            if tasks
            else "n/a"
        )
        verdict = (", ".join(entry["grew"]) or "no") if "grew" in entry else "(not judged)"
        lines.append(
            f"| {name} | {rss.get('warm')} -> {rss.get('last')} | {rss.get('slope_per_min')} "
            f"| {_g(fds.get('warm'))} -> {_g(fds.get('last'))} | {task_text} | {verdict} |"
        )
    return "\n".join(lines)


def _g(value: float | None) -> str:
    return "n/a" if value is None else f"{value:g}"


def plot(result: dict[str, Any], plots: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench.common import save_figure

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name in SERVICES:
        rows_ = result["series"].get(name, [])
        for ax, k, label in zip(
            axes, (1, 2, 3), ("RSS (MB)", "open fds", "asyncio tasks"), strict=True
        ):
            pts = [(r[0] / 60, r[k]) for r in rows_ if r[k] is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name)
            ax.set_xlabel("minutes")
            ax.set_ylabel(label)
    for ax in axes:
        ax.axvline(result["load_s"] / 120, color="grey", linestyle=":", linewidth=1)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"soak: {result['load_s'] / 60:.0f} min of mixed load (dotted: end of warm-up)")
    return save_figure(fig, plots, "soak.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=FULL["minutes"])
    parser.add_argument("--out", type=Path, default=HERE, help="where results.json is")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--no-record", action="store_true", help="do not write results.json")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=NUMBER", help="e.g. --set rate=10"
    )
    args = parser.parse_args(argv)
    config = {**FULL, "minutes": args.minutes}
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in FULL or not value:
            parser.error(f"bad --set {item!r}; keys: {', '.join(FULL)}")
        config[key] = float(value)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lazyload-soak-"))
    t0, started = time.perf_counter(), time.strftime("%Y-%m-%dT%H:%M:%S%z")
    result = run(config, workdir)
    result["config"] = config
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    raw = workdir / "soak-result.json"  # kept whatever recording does next
    raw.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"result: {raw}")
    print(markdown_table(result))
    for _, metric, value in rows(result):
        print(f"{metric}: {value}")
    if not args.no_record:
        record(result, args.out, started=started)
    return 0 if result["ok"] else 1


def record(result: dict[str, Any], out: Path, *, started: str) -> None:
    """Merge the run into results.json (the other benchmarks kept) as `soak`, with its plot."""
    from bench import __main__ as bench_main
    from bench import common

    machine = common.machine()
    result["machine"] = {
        "cpu_model": machine["cpu_model"],
        "load_avg_at_start": machine["load_avg_at_start"],
    }
    result["full_config"] = FULL
    result["reduced"] = result["config"]["minutes"] < FULL["minutes"]
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    plot_files = plot(result, plots)
    keep_series(result, out)
    results = {
        "started_at": started,
        "configuration": "small" if result["reduced"] else "full",
        "overrides": {},
        "kube": "emulator",
        "machine": machine,
        "benchmarks": {"soak": result},
        "plots": {"soak": plot_files},
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    bench_main.write(results, out, merge=True)


SERIES_FILE = "results/soak_series.json"


def keep_series(result: dict[str, Any], out: Path) -> None:
    """Move the samples out of the result into `out/SERIES_FILE` (thousands of numbers would
    swell results.json); the result names the file."""
    path = out / SERIES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.pop("series"), separators=(",", ":")) + "\n")
    result["series_file"] = SERIES_FILE


if __name__ == "__main__":
    sys.exit(main())
