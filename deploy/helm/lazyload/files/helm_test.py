"""`helm test <release>`: is lazyload ready and does a ServiceFence become a Sidecar?

Runs in the test Pod of templates/tests.yaml (the fence-reconciler image: Python and
lazyload_common, in-cluster credentials of a ServiceAccount that may read the release's
Deployments and create/delete one Service and one ServiceFence); tests/deploy/test_helm_test.py
runs it against a live stack with a kubeconfig.

1. every lazyload Deployment of the release has all its replicas ready;
2. round trip: a Service and a ServiceFence (enabled, one static host) -> fence-reconciler ->
   fence event -> sidecar-writer writes the fence's Sidecar with that host in its egress;
3. the Service and the ServiceFence are deleted again (the Sidecar goes with its fence).

One line per check on stdout; exit 0 when all pass, 1 on the first failure (its reason on stdout).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lazyload_common import kube
from lazyload_common.settings import KubeSettings

NAME = "lazyload-helm-test"
FENCES = "/apis/microservice.slime.io/v1alpha1/namespaces/{ns}/servicefences"
SIDECARS = "/apis/networking.istio.io/{version}/namespaces/{ns}/sidecars"


class CheckFailed(Exception):
    """A check did not pass; the message says which and why."""


def _wait(probe: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        try:
            result = probe()
        except kube.KubeNotFound as error:
            result, last = None, str(error)
        if result:
            return result
        if time.monotonic() > deadline:
            raise CheckFailed(f"{what}: not within {timeout:.0f}s {last}".rstrip())
        time.sleep(1.0)


def check_deployments(api: kube.KubeApi, args: argparse.Namespace) -> None:
    selector = f"app.kubernetes.io/instance={args.release},app.kubernetes.io/part-of=lazyload"
    path = f"/apis/apps/v1/namespaces/{args.namespace}/deployments"

    def unready() -> list[str] | None:
        items = api.list(path, labelSelector=selector).get("items") or []
        if not items:
            raise CheckFailed(
                f"no lazyload Deployment of release {args.release} in {args.namespace}"
            )
        waiting = []
        for item in items:
            spec, status = item.get("spec") or {}, item.get("status") or {}
            wanted, ready = spec.get("replicas", 1), status.get("readyReplicas", 0)
            if ready < wanted or status.get("observedGeneration", 0) < item["metadata"].get(
                "generation", 0
            ):
                waiting.append(f"{item['metadata']['name']} {ready}/{wanted}")
            else:
                print(f"ready: {item['metadata']['name']} {ready}/{wanted}")
        if waiting:
            print(f"waiting: {', '.join(waiting)}")
        return None if waiting else [i["metadata"]["name"] for i in items]

    _wait(unready, args.timeout / 2, "Deployments ready")


def _create(api: kube.KubeApi, path: str, body: dict[str, Any]) -> None:
    with contextlib.suppress(kube.KubeNotFound):  # a leftover of an earlier run
        api.delete(f"{path}/{body['metadata']['name']}")
    deadline = time.monotonic() + 30
    while True:
        try:
            api.create(path, body)
            return
        except kube.KubeConflict:
            existing = _get(api, f"{path}/{body['metadata']['name']}")
            if existing is not None and not existing["metadata"].get("deletionTimestamp"):
                # made in between by someone else (lazyload's own auto-fence): take it over
                replaced = {**body, "metadata": {**body["metadata"]}}
                replaced["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
                with contextlib.suppress(kube.KubeConflict):
                    api.replace(f"{path}/{body['metadata']['name']}", replaced)
                    return
            if time.monotonic() > deadline:  # the leftover is still being deleted
                raise
            time.sleep(1.0)


def _get(api: kube.KubeApi, path: str) -> dict[str, Any] | None:
    try:
        return dict(api.get(path))
    except kube.KubeNotFound:
        return None


def round_trip(api: kube.KubeApi, args: argparse.Namespace) -> None:
    ns, host = args.test_namespace, f"kubernetes.default.svc.{args.cluster_domain}"
    services, fences = f"/api/v1/namespaces/{ns}/services", FENCES.format(ns=ns)
    labels = {"app.kubernetes.io/part-of": "lazyload", "app.kubernetes.io/component": "helm-test"}
    _create(
        api,
        services,
        {
            "apiVersion": "v1",
            "kind": "Service",
            # not auto-fenced: the fence below is the test's own (eager auto-fence would race it)
            "metadata": {"name": NAME, "labels": {**labels, "slime.io/serviceFenced": "false"}},
            "spec": {"selector": {"app": NAME}, "ports": [{"name": "http", "port": 80}]},
        },
    )
    _create(
        api,
        fences,
        {
            "apiVersion": "microservice.slime.io/v1alpha1",
            "kind": "ServiceFence",
            "metadata": {"name": NAME, "labels": labels},
            "spec": {
                "enable": True,
                "host": {host: {"stable": {}}},
                "workloadSelector": {"fromService": True},
            },
        },
    )
    print(f"created: Service and ServiceFence {ns}/{NAME} (static host {host})")
    version = kube.served_version(api, "networking.istio.io", "sidecars", kube.ISTIO_VERSIONS)
    if version is None:
        raise CheckFailed("the API server serves no networking.istio.io Sidecar (Istio's CRDs?)")
    path = f"{SIDECARS.format(version=version, ns=ns)}/{NAME}"

    def written() -> bool:
        sidecar = api.get(path)
        egress = [h for e in sidecar["spec"].get("egress") or [] for h in e.get("hosts") or []]
        return any(h.split("/", 1)[-1] == host for h in egress)

    started = time.monotonic()
    _wait(written, args.timeout / 2, f"Sidecar {ns}/{NAME} with {host} in its egress")
    print(f"written: Sidecar {ns}/{NAME} with {host}, {time.monotonic() - started:.1f}s")


def clean_up(api: kube.KubeApi, args: argparse.Namespace) -> None:
    ns = args.test_namespace
    for path in (FENCES.format(ns=ns), f"/api/v1/namespaces/{ns}/services"):
        with contextlib.suppress(kube.KubeNotFound):
            api.delete(f"{path}/{NAME}")
    print(f"deleted: ServiceFence and Service {ns}/{NAME}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", required=True)
    parser.add_argument("--namespace", required=True, help="the release namespace")
    parser.add_argument("--test-namespace", required=True, help="where the round trip runs")
    parser.add_argument("--cluster-domain", default="cluster.local")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds in all")
    parser.add_argument("--kubeconfig", type=Path, help="default: in-cluster")
    args = parser.parse_args(argv)
    api = kube.KubeApi(kube.api_client(KubeSettings(kubeconfig=args.kubeconfig)))
    try:
        check_deployments(api, args)
        try:
            round_trip(api, args)
        finally:
            clean_up(api, args)
    except (CheckFailed, kube.KubeError) as error:
        print(f"FAILED: {error}")
        return 1
    print("PASSED: lazyload is ready and a ServiceFence became its Sidecar")
    return 0


if __name__ == "__main__":
    sys.exit(main())
