"""The application of a mesh test pod, run inside the pod's network namespace (as root, so its
traffic is intercepted by the pod's sidecar like any application's).

`python -m lazyload_testing.mesh_pod --name N --namespace NS --control SOCKET --http 80 --tcp 9000`
serves:

- on every `--http` port (all addresses of the pod): HTTP/1.1 answering any GET or POST with 200
  and a JSON echo of the request (`workload`, `namespace`, `method`, `path`, `host`, `headers`,
  `peer`, `port`); a path `/status/<code>` answers with that status instead;
- on every `--tcp` port: raw TCP echo (every byte read is written back);
- on every `--grpc` port: gRPC (h2c) answering any unary method with a JSON echo (`workload`,
  `namespace`, `method`, `metadata`, `peer`, `port`, `request` - the request bytes as text);
- on the Unix socket `--control` (a file, so the test process outside the network namespace
  reaches it): one JSON request per connection, one JSON answer, for calls made *from* the pod:
  `{"op": "http", "ip", "port", "method", "path", "authority", "headers", "timeout"}`,
  `{"op": "tcp", "ip", "port", "payload" (base64), "timeout"}`,
  `{"op": "grpc", "ip", "port", "authority", "method", "payload" (base64), "metadata",
  "timeout"}` (answers `code`, the status code's name, and `body` or `details`),
  `{"op": "admin", "path"}` (the sidecar's Envoy admin API on 127.0.0.1:15000) and `{"op": "ping"}`.
  A call that fails answers `{"error": "..."}`.

Only the standard library (grpcio is imported only by pods that serve or call gRPC): it starts in
a fraction of a second.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import http.server
import json
import os
import signal
import socket
import socketserver
import sys
import threading
from typing import Any

ENVOY_ADMIN = ("127.0.0.1", 15000)


def _http_handler(
    workload: str, namespace: str, port: int
) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            status = 200
            if self.path.startswith("/status/"):
                try:
                    status = int(self.path.split("/")[2])
                except (IndexError, ValueError):
                    status = 400
            body = json.dumps(
                {
                    "workload": workload,
                    "namespace": namespace,
                    "method": self.command,
                    "path": self.path,
                    "host": self.headers.get("host", ""),
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "peer": self.client_address[0],
                    "port": port,
                }
            ).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = _answer
        do_POST = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


class _TcpEcho(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while True:
            data = self.request.recv(65536)
            if not data:
                return
            self.request.sendall(data)


class _Threading(socketserver.ThreadingMixIn):
    daemon_threads = True
    allow_reuse_address = True


class _TcpServer(_Threading, socketserver.TCPServer):
    pass


class _HttpServer(_Threading, http.server.HTTPServer):
    pass


class _UnixServer(_Threading, socketserver.UnixStreamServer):
    pass


def _http_call(request: dict[str, Any]) -> dict[str, Any]:
    conn = http.client.HTTPConnection(
        request["ip"], int(request["port"]), timeout=float(request.get("timeout", 10))
    )
    try:
        headers = {"Host": request["authority"], **(request.get("headers") or {})}
        conn.request(request.get("method", "GET"), request.get("path", "/"), headers=headers)
        response = conn.getresponse()
        body = response.read()
        return {
            "status": response.status,
            "headers": {k.lower(): v for k, v in response.getheaders()},
            "body": body.decode("utf-8", "replace"),
        }
    finally:
        conn.close()


def _tcp_call(request: dict[str, Any]) -> dict[str, Any]:
    payload = base64.b64decode(request["payload"])
    timeout = float(request.get("timeout", 10))
    received = b""
    with socket.create_connection((request["ip"], int(request["port"])), timeout=timeout) as sock:
        sock.sendall(payload)
        while len(received) < len(payload):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    return {"payload": base64.b64encode(received).decode()}


def _grpc_servers(ports: list[int], workload: str, namespace: str) -> list[Any]:
    """One started gRPC server per port (none, and no import, without `--grpc`)."""
    if not ports:
        return []
    from concurrent import futures

    import grpc

    class Echo(grpc.GenericRpcHandler):
        def __init__(self, port: int) -> None:
            self.port = port

        def service(self, details: Any) -> Any:
            def echo(request: bytes, context: Any) -> bytes:
                return json.dumps(
                    {
                        "workload": workload,
                        "namespace": namespace,
                        "method": details.method,
                        "metadata": dict(context.invocation_metadata()),
                        "peer": context.peer(),
                        "port": self.port,
                        "request": request.decode("utf-8", "replace"),
                    }
                ).encode()

            return grpc.unary_unary_rpc_method_handler(echo)

    servers = []
    for port in ports:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        server.add_generic_rpc_handlers((Echo(port),))
        server.add_insecure_port(f"0.0.0.0:{port}")
        server.start()
        servers.append(server)
    return servers


def _grpc_call(request: dict[str, Any]) -> dict[str, Any]:
    import grpc

    options = [("grpc.default_authority", request["authority"])] if request.get("authority") else []
    with grpc.insecure_channel(f"{request['ip']}:{int(request['port'])}", options=options) as ch:
        call = ch.unary_unary(request.get("method", "/lazyload.Echo/Call"))
        try:
            body = call(
                base64.b64decode(request.get("payload") or ""),
                metadata=tuple((request.get("metadata") or {}).items()),
                timeout=float(request.get("timeout", 10)),
            )
        except grpc.RpcError as e:
            return {"code": e.code().name, "details": e.details() or ""}
    return {"code": "OK", "body": body.decode("utf-8", "replace")}


def _admin_call(request: dict[str, Any]) -> dict[str, Any]:
    conn = http.client.HTTPConnection(*ENVOY_ADMIN, timeout=float(request.get("timeout", 10)))
    try:
        conn.request(request.get("method", "GET"), request["path"])
        response = conn.getresponse()
        return {"status": response.status, "body": response.read().decode("utf-8", "replace")}
    finally:
        conn.close()


_OPS = {
    "http": _http_call,
    "tcp": _tcp_call,
    "grpc": _grpc_call,
    "admin": _admin_call,
    "ping": lambda _request: {"ok": True},
}


class _Control(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        try:
            request = json.loads(self.rfile.readline())
            answer = _OPS[request["op"]](request)
        except Exception as e:  # every failure goes back to the caller, the server carries on
            answer = {"error": f"{type(e).__name__}: {e}"}
        self.wfile.write(json.dumps(answer).encode() + b"\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--control", required=True)
    parser.add_argument("--http", type=int, action="append", default=[])
    parser.add_argument("--tcp", type=int, action="append", default=[])
    parser.add_argument("--grpc", type=int, action="append", default=[])
    args = parser.parse_args(argv)

    servers: list[socketserver.BaseServer] = []
    for port in args.http:
        servers.append(
            _HttpServer(("0.0.0.0", port), _http_handler(args.name, args.namespace, port))
        )
    for port in args.tcp:
        servers.append(_TcpServer(("0.0.0.0", port), _TcpEcho))
    grpc_servers = _grpc_servers(args.grpc, args.name, args.namespace)  # noqa: F841 (kept alive)
    if os.path.exists(args.control):
        os.unlink(args.control)
    control = _UnixServer(args.control + ".tmp", _Control)
    os.replace(args.control + ".tmp", args.control)  # the socket appears when everything serves
    servers.append(control)
    for server in servers[:-1]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        control.serve_forever()
    finally:
        os.unlink(args.control)


if __name__ == "__main__":
    main()
