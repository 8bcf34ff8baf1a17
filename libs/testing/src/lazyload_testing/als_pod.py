"""accesslog-ingest's mesh ALS port in a mesh test pod, cheaply: its real receiver
(`receiving.AccessLogReceiver` with a `MeshPort`, `AlsServer`, the real `Ingestor` over an empty
Service index), with no NATS and no Kubernetes watch. Run inside the pod's network namespace
beside its istio-proxy, so every stream arrives through the proxy's inbound listener, as in the
chart's `sidecarAccessLogs` setup.

`python -m lazyload_testing.als_pod --port 8083 --status-port 15101 --account global-sidecar`
serves ALS on `--port` (plaintext, all addresses) and, on `--status-port` (kept out of the
pod's capture by the caller), `GET /status`: JSON with the streams admitted (`peer`, the SPIFFE
identity the proxy's x-forwarded-client-cert proved, and the node's `namespace`, `workload`,
`node`), the edges learned (`[source namespace, source name, destination]`) and the ingest
counters of closed streams and rejections by reason.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from lazyload_accesslog_ingest import indexing, receiving
from lazyload_accesslog_ingest.ingesting import Ingestor, Sighting
from lazyload_accesslog_ingest.records import Rejection, StreamIdentity
from prometheus_client import REGISTRY

CLOSED_REASONS = ("idle", "malformed", "unauthenticated", "identity_mismatch")


class _Recorder(receiving.AccessLogReceiver):
    """The real receiver, noting each admitted stream and each edge for `/status`."""

    def __init__(self, account: str) -> None:
        self.admitted: list[dict[str, str]] = []
        self.edges: list[list[str]] = []
        self.lock = threading.Lock()
        mesh = receiving.MeshPort(global_sidecar_accounts=frozenset({account}))
        super().__init__(Ingestor(indexing.ServiceIndex()), self._sink, mesh=mesh)

    def _sink(self, sightings: Mapping[str, Sighting], at: float) -> None:
        with self.lock:
            for proto, _ in sightings.values():
                edge = [proto.source_namespace, proto.source_name, proto.destination_host]
                if edge not in self.edges:
                    self.edges.append(edge)

    def admit(self, claimed: StreamIdentity | None, admission: receiving.Admission) -> None:
        super().admit(claimed, admission)  # raises (closing the stream) on a mismatch
        if claimed is not None:
            with self.lock:
                self.admitted.append(
                    {
                        "peer": str(admission.proven),
                        "namespace": claimed.namespace,
                        "workload": claimed.workload,
                        "node": claimed.node_id,
                    }
                )

    def status(self) -> dict[str, Any]:
        def counter(name: str, reason: str) -> float:
            return REGISTRY.get_sample_value(name, {"reason": reason}) or 0.0

        with self.lock:
            return {
                "admitted": list(self.admitted),
                "edges": list(self.edges),
                "closed": {
                    r: counter("lazyload_ingest_streams_closed_total", r) for r in CLOSED_REASONS
                },
                "rejected": {
                    r.value: counter("lazyload_ingest_rejected_total", r.value) for r in Rejection
                },
            }


def _status_server(recorder: _Recorder, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(recorder.status()).encode()
            self.send_response(200 if self.path == "/status" else 404)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


async def _serve(args: argparse.Namespace) -> None:
    recorder = _Recorder(args.account)
    status = _status_server(recorder, args.status_port)
    server = receiving.AlsServer(
        recorder, host="0.0.0.0", port=args.port, max_message_bytes=4 << 20
    )
    await server.start()
    try:
        await asyncio.Event().wait()  # until the process is stopped
    finally:
        status.shutdown()
        await server.stop(0.5)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="accesslog-ingest's mesh ALS port in a mesh test pod"
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--status-port", type=int, required=True)
    parser.add_argument("--account", default="global-sidecar")
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
