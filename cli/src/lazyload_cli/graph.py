"""`lazyload graph [-n ns] -o dot|mermaid|json|yaml` and `lazyload graph --serve`.

The graph is the fence-reconciler's `GET /api/v1/graph` (nodes: `ns/name` Services, external
hosts, whole namespaces `ns/*`; edges: a fence's caller -> each host its Sidecar gets, with the
reasons). `-n` keeps the nodes of a namespace and everything they touch. `--serve` serves the
reconciler's graph page (the same file its admin port serves at `/graph`) on a local port and
passes the page's reads (`api/v1/graph`, `api/v1/fences/...`) to the target, so a cluster's graph
is drawn without a port-forward.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from lazyload_fence_reconciler import api as reconciler_api

from lazyload_cli import access

_READS = re.compile(r"^/api/v1/(graph|fences/[a-z0-9.-]+/[a-z0-9.-]+(/decisions)?)$")
"""The reads the page makes, and all that `--serve` passes on."""


def read(target: access.Target) -> dict[str, Any]:
    """The dependency graph of the target (from the first reconciler instance that answers)."""
    return dict(target.admin_json("fence-reconciler", "/api/v1/graph")[0])


def only_namespace(graph: dict[str, Any], namespace: str | None) -> dict[str, Any]:
    """The nodes of `namespace`, the edges that touch them and the nodes at their other ends."""
    if not namespace:
        return graph
    keep = {n["id"] for n in graph["nodes"] if n["id"].split("/", 1)[0] == namespace}
    keep &= {n["id"] for n in graph["nodes"] if "/" in n["id"]}
    edges = [e for e in graph["edges"] if e["source"] in keep or e["target"] in keep]
    keep |= {e["source"] for e in edges} | {e["target"] for e in edges}
    return {"nodes": [n for n in graph["nodes"] if n["id"] in keep], "edges": edges}


def to_dot(graph: dict[str, Any]) -> str:
    lines = ["digraph lazyload {", "  rankdir=LR;", "  node [shape=box, style=rounded];"]
    for node in graph["nodes"]:
        shape = {"external": "ellipse", "namespace": "folder"}.get(node["kind"], "box")
        style = ', style="rounded,bold"' if node.get("fenced") else ""
        lines.append(f"  {_quote(node['id'])} [shape={shape}{style}];")
    for edge in graph["edges"]:
        label = ",".join(edge.get("reasons") or [])
        lines.append(
            f"  {_quote(edge['source'])} -> {_quote(edge['target'])} [label={_quote(label)}];"
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_mermaid(graph: dict[str, Any]) -> str:
    ids = {node["id"]: f"n{i}" for i, node in enumerate(graph["nodes"])}
    lines = ["flowchart LR"]
    for node in graph["nodes"]:
        text = node["id"].replace('"', "#quot;")
        left, right = {"external": ("([", "])"), "namespace": ("[[", "]]")}.get(
            node["kind"], ("[", "]")
        )
        lines.append(f'  {ids[node["id"]]}{left}"{text}"{right}')
    for edge in graph["edges"]:
        label = ",".join(edge.get("reasons") or []).replace('"', "#quot;").replace("|", "/")
        arrow = f"-->|{label}|" if label else "-->"
        lines.append(f"  {ids[edge['source']]} {arrow} {ids[edge['target']]}")
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def serve(target: access.Target, host: str, port: int) -> ThreadingHTTPServer:
    """A server of the graph page on `host:port` (0: a free one) whose reads go to `target`;
    started in a daemon thread; `shutdown()` stops it."""
    page = reconciler_api.graph_page().encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            if path in ("/", "/graph"):
                self._send(200, "text/html; charset=utf-8", page)
            elif _READS.match(path):
                self._pass(path)
            else:
                self._send(404, "application/json", b'{"detail": "not found"}')

        def _pass(self, path: str) -> None:
            try:
                answers = target.admin_get("fence-reconciler", path)
            except access.AccessError as e:
                body = json.dumps({"detail": str(e)}).encode()
                self._send(502, "application/json", body)
                return
            _, status, body = answers[0]
            self._send(status, "application/json", body)

        def _send(self, status: int, kind: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: the terminal shows the URL, not every request

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="graph-page", daemon=True).start()
    return server
