"""Register the demo mesh (mesh.yaml) in the Kubernetes API emulator; idempotent (409 = exists).

Runs in the kube-emulator image (python + pyyaml) as the compose service `demo-seed`.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

PLURALS = {"Namespace": "namespaces", "Service": "services", "Endpoints": "endpoints"}


def path(obj: dict) -> str:
    plural = PLURALS[obj["kind"]]
    namespace = obj["metadata"].get("namespace")
    return f"/api/v1/namespaces/{namespace}/{plural}" if namespace else f"/api/v1/{plural}"


def main() -> int:
    server = sys.argv[1] if len(sys.argv) > 1 else "http://kube-emulator:6443"
    manifest = Path(sys.argv[2] if len(sys.argv) > 2 else Path(__file__).with_name("mesh.yaml"))
    for obj in (o for o in yaml.safe_load_all(manifest.read_text()) if o):
        request = urllib.request.Request(
            server + path(obj),
            data=json.dumps(obj).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        for attempt in range(30):
            try:
                urllib.request.urlopen(request, timeout=5).close()
                break
            except urllib.error.HTTPError as error:
                if error.code == 409:
                    break
                raise
            except OSError:
                time.sleep(min(0.2 * 2**attempt, 2))
        else:
            raise SystemExit(f"{server} did not answer")
        print(f"{obj['kind']} {obj['metadata']['name']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
