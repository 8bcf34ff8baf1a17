"""`lazyload-kube-emulator`: run the Kubernetes API emulator and write a kubeconfig for it."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from urllib.parse import urlparse

from . import state
from .config import DEFAULT_NAMESPACES, EmulatorConfig
from .kubeconfig import render
from .server import EmulatorServer

log = logging.getLogger("lazyload_kube_emulator")


def _url(value: str) -> str:
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise argparse.ArgumentTypeError(f"not an http(s)://host[:port] URL: {value!r}")
    return value.rstrip("/")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="lazyload-kube-emulator",
        description="A local Kubernetes API emulator (in-memory; not a real API server).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: a free port)")
    parser.add_argument(
        "--kubeconfig-out",
        type=Path,
        help="write a kubeconfig here once listening (default: print it to stdout)",
    )
    parser.add_argument(
        "--advertise-url",
        type=_url,
        metavar="URL",
        help="server URL written into the kubeconfig (default: the bound http://host:port), "
        "e.g. http://kube-emulator:6443 when other containers reach it by a service name",
    )
    parser.add_argument(
        "--crds",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="apply every CRD manifest in DIR at start (repeatable)",
    )
    parser.add_argument(
        "--state-file", type=Path, help="load objects from / save them to this file"
    )
    parser.add_argument(
        "--service-cidr", default="10.96.0.0/12", help="range of Service cluster IPs"
    )
    parser.add_argument(
        "--namespace",
        action="append",
        default=[],
        metavar="NAME",
        help="create this namespace at start, beside the default ones (repeatable), e.g. "
        "mesh-operator, where lazyload keeps its own objects",
    )
    parser.add_argument(
        "--allow-loopback-endpoints",
        action="store_true",
        help="accept loopback and link-local addresses in Endpoints and EndpointSlices, which a "
        "real API server refuses (the demo's pods are loopback servers)",
    )
    parser.add_argument(
        "--authorize",
        action="store_true",
        help="authorize requests by the stored RBAC objects: the bearer token names the user "
        "(system:serviceaccount:<ns>:<name>); the kubeconfig's token is the admin",
    )
    parser.add_argument("--history-size", type=int, default=10_000, help="watch events kept")
    parser.add_argument("--log-level", default="INFO", help="logging level")
    return parser.parse_args(argv)


def _announce(server: EmulatorServer, kubeconfig_out: Path | None) -> None:
    """Write (or print) the kubeconfig: the signal that the emulator is listening."""
    if kubeconfig_out is None:
        print(render(server.kubeconfig_url), end="", flush=True)
        return
    server.write_kubeconfig(kubeconfig_out)
    advertised = f" (advertised as {server.advertise_url})" if server.advertise_url else ""
    print(
        f"Kubernetes API emulator at {server.url}{advertised}, kubeconfig: {kubeconfig_out}",
        flush=True,
    )


async def serve(args: argparse.Namespace) -> None:
    """Run until SIGINT/SIGTERM, then end watches, stop and save the state file if asked."""
    config = EmulatorConfig(
        crd_dirs=tuple(args.crds),
        service_cidr=args.service_cidr,
        namespaces=tuple(dict.fromkeys([*DEFAULT_NAMESPACES, *args.namespace])),
        history_size=args.history_size,
        authorize=args.authorize,
        allow_loopback_endpoints=args.allow_loopback_endpoints,
    )
    server = EmulatorServer(args.host, args.port, config, advertise_url=args.advertise_url)
    if args.state_file:
        log.info(
            "restored %d objects from %s",
            state.load(server.emulator, args.state_file),
            args.state_file,
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    _announce(server, args.kubeconfig_out)
    try:
        await stop.wait()
    finally:
        log.info("stopping the Kubernetes API emulator")
        await server.stop()
        if args.state_file:
            state.save(server.emulator, args.state_file)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
