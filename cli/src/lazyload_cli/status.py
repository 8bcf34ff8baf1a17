"""`lazyload status`: is lazyload healthy and keeping up?

- each service ready or not (its `/readyz`, with the checks that fail), per instance;
- consumer lag per stream (`lazyload_consumer_pending{stream,consumer}` of each service's
  `/metrics`: JetStream's num_pending as of the consumer's last fetch);
- fences and their Sidecars: in sync / out of sync / failing / not rendered (`explain.sync_state`
  over every ServiceFence and Sidecar of the Kubernetes API), the ones not in sync named;
- the SLI, first call -> Sidecar written, of the last 15 minutes: count, mean, p50/p90/p99 from
  the streams when NATS can be read (a local stack, as its `admin` identity: the `observer` may
  not use JetStream): each FenceChanged's `first_seen` against the SidecarApplied of that fence
  revision; else from sidecar-writer's histogram `lazyload_first_call_to_sidecar_seconds`
  (cumulative: since the writer started, p-values as bucket bounds);
- dead letters: of the last hour from the `LAZYLOAD_DLQ` stream when NATS can be read, by service
  and reason; else the totals of `lazyload_dead_letters_total` since each service started.

`status()` returns a plain dict (what `-o json|yaml` prints); `render()` prints it for people.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections import Counter
from typing import Any

import nats
from lazyload_common import codec, events, natsauth, subjects
from lazyload_fence_reconciler import fences
from nats.js.api import ConsumerConfig, DeliverPolicy
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from lazyload_cli import access, explain

SLI = "lazyload_first_call_to_sidecar_seconds"
DLQ_WINDOW = 3600.0
SLI_WINDOW = 900.0
"""Seconds back the SLI is computed over, from the streams (a local stack)."""


def status(target: access.Target) -> dict[str, Any]:
    notes: list[str] = []
    services, metrics = _services(target, notes)
    streams = _from_streams(target, notes)
    if streams is not None:
        sli = _windowed_sli(streams[subjects.FENCES_STREAM], streams[subjects.SIDECARS_STREAM])
    else:
        sli = _sli(metrics.get("sidecar-writer", []))
    return {
        "target": target.description,
        "services": services,
        "consumer_lag": _lag(metrics),
        "fences": _fences(target),
        "first_call_to_sidecar": sli,
        "dead_letters": _dead_letters(metrics, streams),
        "notes": notes,
    }


def healthy(report: dict[str, Any]) -> bool:
    """Every service ready, no fence failing."""
    ready = all(i["ready"] for s in report["services"] for i in s["instances"])
    return ready and bool(report["services"]) and report["fences"]["counts"].get("failing", 0) == 0


def _services(
    target: access.Target, notes: list[str]
) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    rows, metrics = [], {}
    for service in access.SERVICES:
        instances = []
        try:
            answers = target.admin_get(service, "/readyz")
        except access.AccessError as e:
            rows.append(
                {
                    "service": service,
                    "instances": [{"instance": "-", "ready": False, "failing": [str(e)]}],
                }
            )
            continue
        for instance, code, body in answers:
            failing = []
            try:
                checks = json.loads(body).get("checks", {})
                failing = sorted(k for k, ok in checks.items() if not ok)
            except ValueError:
                failing = [f"HTTP {code}"]
            instances.append({"instance": instance, "ready": code == 200, "failing": failing})
        rows.append({"service": service, "instances": instances})
        try:
            metrics[service] = [
                body.decode()
                for _, code, body in target.admin_get(service, "/metrics")
                if code == 200
            ]
        except access.AccessError as e:
            notes.append(f"{service} /metrics: {e}")
    return rows, metrics


def _samples(texts: list[str], name: str) -> list[tuple[str, dict[str, str], float]]:
    out = []
    for text in texts:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name.startswith(name):
                    out.append((sample.name, dict(sample.labels), float(sample.value)))
    return out


def _lag(metrics: dict[str, list[str]]) -> list[dict[str, Any]]:
    lag: dict[tuple[str, str], float] = {}
    for texts in metrics.values():
        for _, labels, value in _samples(texts, "lazyload_consumer_pending"):
            key = (labels.get("stream", ""), labels.get("consumer", ""))
            lag[key] = lag.get(key, 0.0) + value
    return [
        {"stream": stream, "consumer": consumer, "pending": int(value)}
        for (stream, consumer), value in sorted(lag.items())
    ]


def _fences(target: access.Target) -> dict[str, Any]:
    sidecars = {
        (s["metadata"]["namespace"], s["metadata"]["name"]): s
        for s in target.list(f"{access.SIDECARS}/sidecars")
    }
    counts: Counter[str] = Counter()
    attention = []
    objs = target.list(f"{access.FENCES}/servicefences")
    for obj in objs:
        fence = fences.Fence.from_raw(obj)
        state = explain.sync_state(fence, sidecars.get(fence.key))
        counts[state["sync"]] += 1
        if state["sync"] in ("out-of-sync", "failing"):
            message = (state["condition"] or {}).get("message", "")
            attention.append(
                {
                    "fence": f"{fence.namespace}/{fence.name}",
                    "sync": state["sync"],
                    "revision": fence.revision,
                    "sidecar_revision": state["revision"],
                    "message": message,
                }
            )
    return {"total": len(objs), "counts": dict(sorted(counts.items())), "attention": attention}


def _sli(texts: list[str]) -> dict[str, Any]:
    buckets: dict[float, float] = {}
    count = total = 0.0
    for name, labels, value in _samples(texts, SLI):
        if name.endswith("_bucket"):
            bound = float(labels["le"])
            buckets[bound] = buckets.get(bound, 0.0) + value
        elif name.endswith("_count"):
            count += value
        elif name.endswith("_sum"):
            total += value
    out: dict[str, Any] = {"count": int(count), "since": "the writer started"}
    if count:
        out["mean_seconds"] = round(total / count, 3)
        for q in (0.5, 0.9, 0.99):
            bound = next((b for b in sorted(buckets) if buckets[b] >= q * count), math.inf)
            out[f"p{round(q * 100)}_seconds_at_most"] = None if math.isinf(bound) else bound
    return out


def _from_streams(target: access.Target, notes: list[str]) -> dict[str, list[Any]] | None:
    """The events of the last hour of dead letters and of the SLI window, when NATS can be read."""
    if target.endpoints is None or not target.endpoints.get("nats_url"):
        return None
    wanted = {
        subjects.DLQ_STREAM: (f"{subjects.DLQ_PREFIX}.>", DLQ_WINDOW),
        subjects.FENCES_STREAM: (f"{subjects.FENCE_PREFIX}.>", SLI_WINDOW),
        subjects.SIDECARS_STREAM: (f"{subjects.SIDECAR_PREFIX}.>", SLI_WINDOW),
    }
    try:
        options = access.nats_connect_options(target.endpoints, _reader(target.endpoints))
        return asyncio.run(_read_streams(options, wanted))
    except Exception as e:  # refused, unreachable: the metrics still say something
        notes.append(f"the streams could not be read ({type(e).__name__}: {e})")
        return None


def _dead_letters(
    metrics: dict[str, list[str]], streams: dict[str, list[Any]] | None
) -> dict[str, Any]:
    if streams is not None:
        letters = [e for e in streams[subjects.DLQ_STREAM] if isinstance(e, events.DeadLetter)]
        counted = Counter((d.service, d.reason.split(":", 1)[0][:60]) for d in letters)
        return {
            "window": "the last hour",
            "total": len(letters),
            "by_reason": [
                {"service": s, "reason": r, "count": n} for (s, r), n in sorted(counted.items())
            ],
        }
    by_reason = Counter[tuple[str, str]]()
    for texts in metrics.values():
        for name, labels, value in _samples(texts, "lazyload_dead_letters_total"):
            if name == "lazyload_dead_letters_total" and value:
                by_reason[(labels.get("service", ""), labels.get("reason", ""))] += int(value)
    return {
        "window": "since each service started",
        "total": sum(by_reason.values()),
        "by_reason": [
            {"service": s, "reason": r, "count": n} for (s, r), n in sorted(by_reason.items())
        ],
    }


def _reader(endpoints: dict[str, Any]) -> str:
    """Who reads the DLQ stream of a local stack: its `admin` identity when it has NATS
    authentication (the `observer` may make no JetStream API call), else anyone."""
    credentials = endpoints.get("nats_credentials") or {}
    return natsauth.ADMIN if natsauth.ADMIN in credentials else natsauth.OBSERVER


async def _read_streams(
    options: dict[str, Any], wanted: dict[str, tuple[str, float]]
) -> dict[str, list[Any]]:
    """The decoded events of each stream in `wanted` (name -> (subject filter, seconds back)),
    by an ordered consumer from that time; one connection for all."""
    refused: list[Exception] = []

    async def on_error(e: Exception) -> None:  # a permissions violation: fail at once, quietly
        refused.append(e)

    nc = await nats.connect(**options, connect_timeout=3, allow_reconnect=False, error_cb=on_error)
    out: dict[str, list[Any]] = {}
    try:
        js = nc.jetstream()
        for stream, (subject, back) in wanted.items():
            since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - back))
            sub = await js.subscribe(
                subject,
                stream=stream,
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.BY_START_TIME,
                # nats-py sends opt_start_time as given (RFC 3339), its annotation says datetime
                config=ConsumerConfig(opt_start_time=since),  # pyright: ignore[reportArgumentType]
            )
            if refused:
                raise refused[0]
            out[stream] = await _drain(sub)
            await sub.unsubscribe()
    finally:
        await nc.close()
    return out


async def _drain(sub: Any) -> list[Any]:
    got: list[Any] = []
    while True:
        try:
            msg = await sub.next_msg(timeout=1.0)
        except TimeoutError:
            return got
        with contextlib.suppress(Exception):  # not ours to judge: the consumers dead-letter it
            got.append(codec.decode(msg.data))
        if msg.metadata.num_pending == 0:
            return got


def _windowed_sli(fence_events: list[Any], sidecar_events: list[Any]) -> dict[str, Any]:
    """First call -> Sidecar of the hosts whose fence revision was written in the window: each
    FenceChanged's `first_seen` (per added learned host) against the first SidecarApplied of the
    same fence at that revision or a later one (the writer may skip to the newest)."""
    applied: dict[tuple[str, str], list[tuple[float, int]]] = {}
    for e in sidecar_events:
        if isinstance(e, events.SidecarApplied) and e.action in ("applied", "unchanged"):
            applied.setdefault((e.namespace, e.name), []).append((e.applied_at, e.revision))
    latencies = []
    for e in fence_events:
        if not isinstance(e, events.FenceChanged) or not e.first_seen:
            continue
        written = min(
            (at for at, rev in applied.get((e.namespace, e.name), []) if rev >= e.revision),
            default=None,
        )
        if written is not None:
            latencies += [max(0.0, written - first) for first in e.first_seen.values()]
    latencies.sort()
    out: dict[str, Any] = {"count": len(latencies), "since": f"{SLI_WINDOW / 60:g} minutes ago"}
    if latencies:
        out["mean_seconds"] = round(sum(latencies) / len(latencies), 3)
        for q in (0.5, 0.9, 0.99):
            rank = min(len(latencies) - 1, math.ceil(q * len(latencies)) - 1)
            out[f"p{round(q * 100)}_seconds_at_most"] = round(latencies[rank], 3)
    return out


def render(report: dict[str, Any], console: Console) -> None:
    console.print(f"lazyload status of {report['target']}")
    table = Table("service", "instance", "ready", "failing checks")
    for service in report["services"]:
        for i in service["instances"]:
            ready = "[green]yes[/]" if i["ready"] else "[red]no[/]"
            table.add_row(service["service"], i["instance"], ready, ", ".join(i["failing"]))
    console.print(table)
    if report["consumer_lag"]:
        lag = Table("stream", "consumer", "pending")
        for row in report["consumer_lag"]:
            lag.add_row(row["stream"], row["consumer"], str(row["pending"]))
        console.print(lag)
    f = report["fences"]
    counts = ", ".join(f"{n} {state}" for state, n in f["counts"].items()) or "none"
    console.print(f"fences: {f['total']} ({counts})")
    for row in f["attention"]:
        console.print(
            f"  [yellow]{row['fence']}[/]: {row['sync']} (fence revision {row['revision']}, "
            f"Sidecar revision {row['sidecar_revision']}) {row['message']}",
            soft_wrap=True,
        )
    sli = report["first_call_to_sidecar"]
    if sli["count"]:
        console.print(
            f"first call -> Sidecar ({sli['count']} hosts since {sli['since']}): mean "
            f"{sli['mean_seconds']} s, p50 <= {sli['p50_seconds_at_most']} s, p90 <= "
            f"{sli['p90_seconds_at_most']} s, p99 <= {sli['p99_seconds_at_most']} s"
        )
    else:
        console.print(f"first call -> Sidecar: no host learned since {sli['since']}")
    dead = report["dead_letters"]
    console.print(f"dead letters ({dead['window']}): {dead['total']}")
    for row in dead["by_reason"]:
        console.print(f"  {row['service']}: {row['reason']}: {row['count']}", soft_wrap=True)
    for note in report["notes"]:
        console.print(f"[dim]note: {note}", soft_wrap=True)
