"""NATS identities for docker compose and the Helm chart: keys, nats-server users, Secrets.

    python deploy/tools/nats_auth.py DIR [--owner UID:GID]
        [--secrets FILE --namespace NS --release NAME]

Writes into DIR an NKey user seed per lazyload identity (`<identity>.nk`, mode 0600; an existing
one is kept, so a restart does not lock the services out) and `nats-server.conf`, the nats-server
configuration whose `authorization` block gives each identity only the permissions of its job
(`lazyload_common.natsauth`). With `--secrets` it also writes the chart's Secrets (one per
service, key `seed`, named `<release>-nats-<service>`, the chart's default `nats.auth.secrets`)
and `observer`'s and `admin`'s, for your tools.

docker compose runs it (service `nats-auth`, in the fence-reconciler image) before nats starts:
nats-server reads DIR/nats-server.conf, each service its own seed. For a cluster, run it once
with `.venv/bin/python`, `kubectl apply -f` the Secrets, and add the `authorization` block to
your nats-server's configuration (e.g. the NATS chart's `config.merge`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from lazyload_common import natsauth


def secrets_manifest(directory: Path, namespace: str, release: str) -> str:
    """The Kubernetes Secrets of every identity's seed (a YAML stream; JSON documents)."""
    documents = []
    for identity in natsauth.IDENTITIES:
        seed = natsauth.seed_file(directory, identity).read_text().strip()
        documents.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": {"name": f"{release}-nats-{identity}", "namespace": namespace},
                "stringData": {"seed": seed},
            }
        )
    return "".join(f"---\n{json.dumps(d, indent=2)}\n" for d in documents)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--owner", help="UID:GID the seed files are given to (compose: 10001)")
    parser.add_argument("--secrets", type=Path, help="also write the chart's Secrets here")
    parser.add_argument("--namespace", default="mesh-operator")
    parser.add_argument("--release", default="lazyload", help="the chart's fullname")
    args = parser.parse_args(argv)
    users = natsauth.ensure_identities(args.directory)
    config = args.directory / "nats-server.conf"
    config.write_text(natsauth.server_config(users))
    config.chmod(0o644)
    if args.owner:
        uid, gid = (int(x) for x in args.owner.split(":"))
        for identity in natsauth.IDENTITIES:
            os.chown(natsauth.seed_file(args.directory, identity), uid, gid)
    if args.secrets:
        fd = os.open(args.secrets, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets_manifest(args.directory, args.namespace, args.release))
    print(f"NATS identities in {args.directory}: {', '.join(users)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
