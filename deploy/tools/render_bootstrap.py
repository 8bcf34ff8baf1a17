"""Write the global-sidecar's Envoy bootstrap for docker-compose (runs in the main `.venv`).

    .venv/bin/python deploy/tools/render_bootstrap.py [--check]

Envoy does not substitute environment variables in its bootstrap, so the xDS address is fixed
here: the compose service `global-pilot` on its xDS port. The Helm chart renders the same
bootstrap into a ConfigMap (with the in-cluster Service name); a test compares both with
`lazyload_global_pilot.bootstrap.render_bootstrap`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from lazyload_global_pilot.bootstrap import render_bootstrap

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "deploy" / "global-sidecar" / "bootstrap.json"

# Shared with docker-compose.yml and the chart's defaults (checked by tests/deploy).
XDS_HOST = "global-pilot"
XDS_PORT = 18000
ADMIN_HOST = "127.0.0.1"
ADMIN_PORT = 15000


def bootstrap(xds_host: str = XDS_HOST, xds_port: int = XDS_PORT) -> dict[str, Any]:
    return render_bootstrap(
        xds_host=xds_host,
        xds_port=xds_port,
        node_id="global-sidecar",
        cluster="global-sidecar",
        admin_host=ADMIN_HOST,
        admin_port=ADMIN_PORT,
    )


def text(config: dict[str, Any]) -> str:
    return json.dumps(config, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when the file drifted")
    args = parser.parse_args(argv)
    wanted = text(bootstrap())
    if args.check:
        if not OUT.exists() or OUT.read_text() != wanted:
            print(f"{OUT} is out of date: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(wanted)
    print(OUT)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
