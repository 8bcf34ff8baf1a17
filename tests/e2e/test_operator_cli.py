"""`lazyload explain`, `status`, `graph` and `events watch` as a user runs them, on a live stack
after the demo traffic, and the graph page in headless Chromium.

Covers: explain names the fence, its in-sync Sidecar and the learned hosts with first/last seen,
says why a host is in (learned) and why one is not (never seen; after a reset: removed by reset;
a host ingest could not route: ingest's reason), and an unknown caller exits 4 with one line;
status reports the four services ready, zero lag, every fence in sync and the SLI count; graph
gives dot, mermaid and json with the learned edges, `-n` filters; events watch prints the fence and
sidecar events of a reset as lines (as the stack's `observer`); the graph page, served by
`lazyload graph --serve` and by the reconciler's admin port, draws every service and a click on
productpage shows its fence with its hosts.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from lazyload_cli import bookinfo, demo
from lazyload_cli.stack import Stack
from lazyload_common.kube import KubeApi, api_client
from lazyload_common.settings import KubeSettings
from lazyload_testing import browser

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent / "lazyload"
FQDN = "{}.default.svc.cluster.local".format


@pytest.fixture(scope="module")
def learned(stack: Stack) -> Stack:
    """The stack after the demo traffic: productpage -> details, reviews; reviews -> ratings."""
    _, done = asyncio.run(demo.run_traffic(stack.endpoints, demo.Console(quiet=True), timeout=30))
    assert done
    return stack


def _lazyload(stack: Stack, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN), *args, "--state-dir", str(stack.config.state_dir)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _json(stack: Stack, *args: str) -> Any:
    result = _lazyload(stack, *args, "-o", "json")
    assert result.returncode == 0, result
    return json.loads(result.stdout)


def test_explain_says_why_a_host_is_in_or_not(learned: Stack) -> None:
    out = _json(learned, "explain", "default/productpage", "details")
    assert out["fence"]["name"] == "productpage" and out["fence"]["enabled"] is True
    assert out["sidecar"]["sync"] == "in-sync", out["sidecar"]
    hosts = {h["host"]: h for h in out["hosts"]}
    assert set(hosts) == {FQDN("details"), FQDN("reviews")}
    assert hosts[FQDN("details")]["reasons"] == ["learned"]
    assert hosts[FQDN("details")]["first_seen"] and hosts[FQDN("details")]["rendered"]
    assert out["host"]["present"] is True and out["host"]["why"] == "in the Sidecar: learned"
    assert any(d["outcome"] == "learned" for d in out["host"]["decisions"])
    absent = _json(learned, "explain", "default/productpage", "ratings")["host"]
    assert absent["present"] is False and absent["why"].startswith("never seen"), absent
    kube = KubeApi(api_client(KubeSettings(kubeconfig=learned.kubeconfig)))
    kube.create(  # an Event about the fence, as sidecar-writer posts one on a conflict
        "/api/v1/namespaces/default/events",
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": "productpage."},
            "involvedObject": {
                "apiVersion": "microservice.slime.io/v1alpha1",
                "kind": "ServiceFence",
                "namespace": "default",
                "name": "productpage",
            },
            "reason": "SidecarConflict",
            "message": "a test conflict",
            "type": "Warning",
            "source": {"component": "test"},
        },
    )
    human = _lazyload(learned, "explain", "default/productpage", "details")
    assert human.returncode == 0 and "in-sync" in human.stdout, human
    assert "SidecarConflict: a test conflict" in human.stdout, human.stdout
    unknown = _lazyload(learned, "explain", "default/nobody")
    assert unknown.returncode == 4, unknown
    assert len(unknown.stderr.strip().splitlines()) == 1 and "caller unknown" in unknown.stderr


def test_status_reports_ready_services_lag_fences_and_sli(learned: Stack) -> None:
    report = _json(learned, "status")
    assert {s["service"]: [i["ready"] for i in s["instances"]] for s in report["services"]} == {
        "accesslog-ingest": [True],
        "fence-reconciler": [True],
        "sidecar-writer": [True],
        "global-pilot": [True],
    }
    lag = {(row["stream"], row["consumer"]): row["pending"] for row in report["consumer_lag"]}
    assert lag[("LAZYLOAD_DEPS", "fence-reconciler")] == 0
    assert report["fences"]["counts"] == {"in-sync": 4}, report["fences"]
    sli = report["first_call_to_sidecar"]
    assert sli["since"] == "15 minutes ago" and sli["count"] >= 3, sli  # from the streams
    assert 0 <= sli["p50_seconds_at_most"] <= sli["p99_seconds_at_most"] < 30, sli
    assert report["dead_letters"]["window"] == "the last hour", report["notes"]
    assert _lazyload(learned, "status").returncode == 0


def test_graph_as_dot_mermaid_and_json(learned: Stack) -> None:
    dot = _lazyload(learned, "graph")
    assert dot.returncode == 0, dot
    assert '"default/productpage" -> "default/details" [label="learned"];' in dot.stdout
    mermaid = _lazyload(learned, "graph", "-o", "mermaid").stdout
    assert mermaid.startswith("flowchart LR") and mermaid.count("-->|learned|") == 3
    graph = _json(learned, "graph", "-n", "default")
    assert {(e["source"], e["target"]) for e in graph["edges"]} == {
        ("default/productpage", "default/details"),
        ("default/productpage", "default/reviews"),
        ("default/reviews", "default/ratings"),
    }
    assert _json(learned, "graph", "-n", "elsewhere") == {"nodes": [], "edges": []}


def test_graph_page_in_headless_chromium(learned: Stack, tmp_path: Path) -> None:
    server = subprocess.Popen(
        [str(BIN), "graph", "--serve", "--port", "0", "--state-dir", str(learned.config.state_dir)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip().split(" ", 2)[-1]
        assert url.startswith("http://127.0.0.1:"), url
        reconciler = learned.endpoints["admin"]["fence-reconciler"]
        with browser.Chromium(tmp_path / "chromium") as chromium:
            for page in (url, f"{reconciler}/graph"):
                chromium.open(page)
                chromium.wait_for("document.body.dataset.loaded === 'true'")
                nodes = chromium.evaluate(
                    "[...document.querySelectorAll('g.node')].map(g => g.dataset.id).sort()"
                )
                assert nodes == [
                    f"default/{n}" for n in ("details", "productpage", "ratings", "reviews")
                ]
                assert chromium.evaluate("document.querySelectorAll('line.edge').length") == 3
                chromium.evaluate(  # the namespace filter: a namespace nobody is in empties it
                    "(() => { const s = document.getElementById('namespace');"
                    " s.add(new Option('elsewhere', 'elsewhere')); s.value = 'elsewhere';"
                    " s.dispatchEvent(new Event('change')); })()"
                )
                assert chromium.evaluate("document.querySelectorAll('g.node').length") == 0
                chromium.evaluate(
                    "(() => { const s = document.getElementById('namespace'); s.value = 'default';"
                    " s.dispatchEvent(new Event('change')); })()"
                )
                assert chromium.evaluate("document.querySelectorAll('g.node').length") == 4
                chromium.evaluate(
                    "document.querySelector('g.node[data-id=\"default/productpage\"]')"
                    ".dispatchEvent(new MouseEvent('click', {bubbles: true}))"
                )
                chromium.wait_for("document.querySelector('#hosts') !== null")
                text = chromium.evaluate("document.getElementById('fence').innerText")
                assert "default/productpage" in text and FQDN("details") in text, text
                assert "learned" in text
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=10)
        if server.stdout is not None:
            server.stdout.close()


def test_events_watch_and_why_not_after_a_reset(learned: Stack) -> None:
    watch = subprocess.Popen(
        [
            str(BIN),
            "events",
            "watch",
            "--count",
            "2",
            "--timeout",
            "30",
            "-n",
            "default",
            "--state-dir",
            str(learned.config.state_dir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watch.stderr is not None
        assert "watching fence, sidecar" in watch.stderr.readline()  # subscribed
        reset = _lazyload(learned, "fences", "reset", "default/reviews")
        assert reset.returncode == 0, reset
        out, err = watch.communicate(timeout=40)
    finally:
        if watch.poll() is None:
            watch.kill()
    assert watch.returncode == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 2, out
    assert any(" fence   default/reviews rev " in x and f"-{FQDN('ratings')}" in x for x in lines)
    assert any(" sidecar default/reviews rev " in x and " applied, " in x for x in lines)
    why = _json(learned, "explain", "default/reviews", FQDN("ratings"))["host"]
    assert why["present"] is False and why["why"] == "removed: reset", why
    if learned.endpoints.get("nats_credentials"):  # the observer may not read dead letters
        refused = _lazyload(learned, "events", "watch", "--kind", "dlq", "--timeout", "5")
        assert refused.returncode == 5, refused
        assert "permissions violation" in refused.stderr.strip().splitlines()[-1], refused
    # ingest's side: a request Envoy could not route, from reviews' own address
    ingest_rejected = _unrouted_call(learned)
    assert ingest_rejected
    why = _json(learned, "explain", "default/reviews", "nowhere.example")["host"]
    assert why["why"].startswith("dropped by accesslog-ingest: unrouted"), why


def _unrouted_call(stack: Stack) -> bool:
    """A call from reviews through the global-sidecar to a host no route knows (NR)."""
    source = (stack.endpoints.get("pod_ips") or bookinfo.POD_IPS)["reviews"]
    listener = stack.endpoints["global_sidecar_http"]
    deadline = time.monotonic() + 15
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=5) as client:
        assert client.get(f"http://{listener}/", headers={"Host": "nowhere.example"}).is_error
    url = f"{stack.endpoints['admin']['accesslog-ingest']}/api/v1/rejections"
    while time.monotonic() < deadline:
        items = httpx.get(url, params={"namespace": "default", "name": "reviews"}).json()["items"]
        if any(i["host"] == "nowhere.example" for i in items):
            return True
        time.sleep(0.2)
    return False


def test_cluster_mode_reads_the_kubernetes_api(learned: Stack) -> None:
    """With --kubeconfig (no state dir) fences and Sidecars come from the API server; the
    admin APIs are looked for as pods of lazyload's namespace (there are none here: said, not
    fatal, and status exits 6); an API server nobody serves exits 5 with one line."""
    kubeconfig = str(learned.kubeconfig)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN), *args], capture_output=True, text=True, timeout=60, check=False
        )

    explained = run(
        "explain", "default/productpage", "details", "--kubeconfig", kubeconfig, "-o", "json"
    )
    assert explained.returncode == 0, explained
    out = json.loads(explained.stdout)
    assert out["sidecar"]["sync"] == "in-sync" and out["host"]["present"] is True
    assert any(
        "no running fence-reconciler pod in namespace mesh-operator" in w for w in out["warnings"]
    ), out["warnings"]
    status = run("status", "--kubeconfig", kubeconfig, "-o", "json")
    assert status.returncode == 6, status
    assert json.loads(status.stdout)["fences"]["counts"] == {"in-sync": 4}
    broken = Path(kubeconfig).read_text()
    server = next(
        line.split("server:", 1)[1].strip() for line in broken.splitlines() if "server:" in line
    )
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    nowhere = Path(learned.config.state_dir) / "nowhere.kubeconfig"
    scheme = server.split("://", 1)[0]
    nowhere.write_text(broken.replace(server, f"{scheme}://127.0.0.1:{port}"))
    unreachable = run("explain", "default/productpage", "--kubeconfig", str(nowhere))
    assert unreachable.returncode == 5, unreachable
    lines = unreachable.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach the Kubernetes API" in lines[0], unreachable.stderr
