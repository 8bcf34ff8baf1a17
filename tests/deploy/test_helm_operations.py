"""The chart's operating pieces, rendered with the Helm SDK: PodDisruptionBudgets that never block
a drain, pod labels / priority class / topology spread on every Deployment, NOTES.txt (install
and upgrade), the optional PodMonitor, PrometheusRule and Grafana dashboard, and the `helm test`
hook with its least-privilege ServiceAccount."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from deploy_support import CHART, ROOT, helm_tool, values_file

COMPONENTS = ("accesslog-ingest", "fence-reconciler", "sidecar-writer", "global-pilot")
KEYS = ("accesslogIngest", "fenceReconciler", "sidecarWriter", "globalPilot", "globalSidecar")
MONITORING = {
    "monitoring": {
        "podMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "prometheusRule": {"enabled": True, "firstCallToSidecarP99Seconds": 20},
        "grafanaDashboard": {"enabled": True, "namespace": "grafana"},
    }
}


def _render(tmp_path: Path, values: dict[str, Any], *extra: str) -> dict[str, Any]:
    result = helm_tool("render", str(CHART), "--values", values_file(tmp_path, values), *extra)
    out = json.loads(result.stdout)
    out["objects"] = [m["object"] for m in out["manifests"]]
    return out


def _render_fails(tmp_path: Path, values: dict[str, Any]) -> str:
    path = values_file(tmp_path, values, "failing")
    result = helm_tool("render", str(CHART), "--values", path, check=False)
    assert result.returncode != 0, f"rendered: {values}"
    return result.stderr


def _of(objs: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def test_pdbs_never_block_a_drain(tmp_path: Path) -> None:
    two = {"fenceReconciler": {"replicas": 2}, "sidecarWriter": {"replicas": 1}}
    pdbs = _of(_render(tmp_path, two)["objects"], "PodDisruptionBudget")
    assert "lazyload-fence-reconciler" in pdbs and "lazyload-sidecar-writer" not in pdbs
    assert pdbs["lazyload-fence-reconciler"]["spec"]["minAvailable"] == 1
    hpa = {"sidecarWriter": {"autoscaling": {"enabled": True, "minReplicas": 2}}}
    assert "lazyload-sidecar-writer" in _of(
        _render(tmp_path, hpa)["objects"], "PodDisruptionBudget"
    )
    # A budget that keeps every replica fails the install with the reason.
    error = _render_fails(tmp_path, {"globalPilot": {"podDisruptionBudget": {"minAvailable": 2}}})
    assert "would block every drain" in error and "global-pilot" in error
    zero = {"accesslogIngest": {"podDisruptionBudget": {"enabled": True, "maxUnavailable": 0}}}
    assert "would block every drain" in _render_fails(tmp_path, zero)


def test_pod_labels_priority_class_and_topology_spread(tmp_path: Path) -> None:
    spread = [
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
        }
    ]
    values = {
        key: {"podLabels": {"team": "mesh"}, "priorityClassName": "mesh-critical"} for key in KEYS
    }
    values["globalSidecar"]["topologySpreadConstraints"] = spread
    deployments = _of(_render(tmp_path, values)["objects"], "Deployment")
    assert len(deployments) == 5
    for name, deployment in deployments.items():
        template = deployment["spec"]["template"]
        assert template["metadata"]["labels"]["team"] == "mesh", name
        assert "team" not in deployment["spec"]["selector"]["matchLabels"], name
        assert template["spec"]["priorityClassName"] == "mesh-critical", name
        wanted = spread if name == "lazyload-global-sidecar" else None
        assert template["spec"].get("topologySpreadConstraints") == wanted, name
    plain = _of(_render(tmp_path, {})["objects"], "Deployment")["lazyload-fence-reconciler"]
    assert "priorityClassName" not in plain["spec"]["template"]["spec"]


def test_notes_say_what_was_installed_and_how_to_check_it(tmp_path: Path) -> None:
    notes = _render(tmp_path, {})["notes"]
    for component in COMPONENTS:
        assert f"{component}: replicas" in notes
    assert "ghcr.io/lazyload/fence-reconciler:0.1.0" in notes
    assert "helm test lazyload -n mesh-operator" in notes
    assert "lazyload status --lazyload-namespace mesh-operator" in notes
    assert "lazyload explain <namespace>/<service> [host] --lazyload-namespace" in notes
    assert "Helm does not upgrade crds/" not in notes
    upgraded = _render(tmp_path, {}, "--upgrade")["notes"]
    assert "is upgraded" in upgraded
    assert "Helm does not upgrade crds/" in upgraded
    assert "kubectl apply --server-side -f deploy/crds/servicefence.yaml" in upgraded


def test_monitoring_objects_are_optional_and_scrape_every_service(tmp_path: Path) -> None:
    plain = _render(tmp_path, {})["objects"]
    assert not [o for o in plain if o["kind"] in ("PodMonitor", "PrometheusRule")]
    assert "lazyload-dashboard" not in _of(plain, "ConfigMap")
    objs = _render(tmp_path, MONITORING)["objects"]
    monitor = _of(objs, "PodMonitor")["lazyload"]
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    components = next(
        e["values"]
        for e in monitor["spec"]["selector"]["matchExpressions"]
        if e["key"] == "app.kubernetes.io/component"
    )
    assert sorted(components) == sorted(COMPONENTS)
    deployments = _of(objs, "Deployment")
    for component in COMPONENTS:
        pod = deployments[f"lazyload-{component}"]["spec"]["template"]
        assert pod["metadata"]["labels"]["app.kubernetes.io/component"] in components
        ports = [p["name"] for p in pod["spec"]["containers"][0]["ports"]]
        assert "admin" in ports
    assert monitor["spec"]["podMetricsEndpoints"] == [
        {"port": "admin", "path": "/metrics", "interval": "30s"}
    ]
    rules = _of(objs, "PrometheusRule")["lazyload"]["spec"]["groups"][0]["rules"]
    slow = next(r for r in rules if r["alert"] == "LazyloadFirstCallToSidecarSlow")
    assert slow["expr"].endswith("> 20")
    assert 'namespace="mesh-operator"' in slow["expr"]
    assert all(r["annotations"]["summary"] for r in rules)
    dashboard = next(
        o
        for o in objs
        if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "lazyload-dashboard"
    )
    assert dashboard["metadata"]["namespace"] == "grafana"
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    parsed = json.loads(dashboard["data"]["lazyload.json"])
    assert parsed == json.loads((CHART / "dashboards" / "lazyload.json").read_text())
    assert len(parsed["panels"]) >= 8


def _hooked(objs: list[dict]) -> list[dict]:
    return [
        o for o in objs if (o["metadata"].get("annotations") or {}).get("helm.sh/hook") == "test"
    ]


def test_helm_test_hook_runs_the_script_with_least_privilege(tmp_path: Path) -> None:
    objs = _render(tmp_path, {"tests": {"namespace": "lazyload-check"}})["objects"]
    hooked = _hooked(objs)
    assert {o["kind"] for o in hooked} == {
        "ServiceAccount",
        "ConfigMap",
        "Role",
        "RoleBinding",
        "Pod",
    }
    pod = _of(hooked, "Pod")["lazyload-helm-test"]
    weights = {o["kind"]: int(o["metadata"]["annotations"]["helm.sh/hook-weight"]) for o in hooked}
    assert all(w < weights["Pod"] for k, w in weights.items() if k != "Pod")
    container = pod["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/lazyload/fence-reconciler:0.1.0"
    assert container["command"] == ["python", "/helm-test/helm_test.py"]
    assert "--test-namespace=lazyload-check" in container["args"]
    assert pod["spec"]["serviceAccountName"] == "lazyload-helm-test"
    # Hook pods must end: no istio-proxy injected into them (nor into the uninstall Job).
    assert pod["metadata"]["labels"]["sidecar.istio.io/inject"] == "false"
    job = _of(objs, "Job")["lazyload-uninstall"]["spec"]["template"]
    assert job["metadata"]["labels"]["sidecar.istio.io/inject"] == "false"
    script = _of(hooked, "ConfigMap")["lazyload-helm-test"]["data"]["helm_test.py"]
    assert script == (CHART / "files" / "helm_test.py").read_text().rstrip("\n")
    # What the test's ServiceAccount may do: read the release's Deployments; get/delete its one
    # Service, ServiceFence and (get) Sidecar by name; create Services and ServiceFences.
    granted: set[tuple[str, str, str, str, str]] = set()
    roles = _of(hooked, "Role")
    for binding in _of(hooked, "RoleBinding").values():
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "lazyload-helm-test", "namespace": "mesh-operator"}
        ]
        role = roles[binding["roleRef"]["name"]]
        assert role["metadata"]["namespace"] == binding["metadata"]["namespace"]
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        for name in rule.get("resourceNames", ["*any*"]):
                            granted.add(
                                (role["metadata"]["namespace"], group, resource, verb, name)
                            )
    test_ns, name = "lazyload-check", "lazyload-helm-test"
    assert granted == {
        ("mesh-operator", "apps", "deployments", "get", "*any*"),
        ("mesh-operator", "apps", "deployments", "list", "*any*"),
        (test_ns, "", "services", "get", name),
        (test_ns, "", "services", "delete", name),
        (test_ns, "microservice.slime.io", "servicefences", "get", name),
        (test_ns, "microservice.slime.io", "servicefences", "delete", name),
        (test_ns, "", "services", "create", "*any*"),
        (test_ns, "microservice.slime.io", "servicefences", "create", "*any*"),
        (test_ns, "networking.istio.io", "sidecars", "get", name),
    }
    assert not _hooked(_render(tmp_path, {"tests": {"enabled": False}})["objects"])


def test_helm_test_script_is_the_one_tests_run() -> None:
    text = (CHART / "files" / "helm_test.py").read_text()
    assert "tests/deploy/test_helm_test.py" in text
    assert (ROOT / "tests" / "deploy" / "test_helm_test.py").is_file()


WRITE_VERBS = {"create", "update", "patch", "delete"}


def _rbac_table() -> dict[str, tuple[set[str], set[str]]]:
    """service -> (reads, writes) of docs/install.md's RBAC table (parenthetical notes dropped)."""
    text = (ROOT / "docs" / "install.md").read_text()
    start = text.index("| service | reads | writes |")
    rows: dict[str, tuple[set[str], set[str]]] = {}
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        service, reads, writes = (re.sub(r"\([^)]*\)", "", c).strip() for c in line.split("|")[1:4])

        def names(cell: str) -> set[str]:
            return {n.strip() for n in cell.split(",") if n.strip() not in ("", "-")}

        rows[service] = (names(reads), names(writes))
    return rows


def test_install_doc_rbac_table_matches_the_templates(tmp_path: Path) -> None:
    objs = _render(tmp_path, {})["objects"]
    roles = {(o["kind"], o["metadata"]["name"]): o for o in objs if o["kind"].endswith("Role")}
    table = _rbac_table()
    assert set(table) == set(COMPONENTS)
    for service in COMPONENTS:
        verbs: dict[str, set[str]] = {}
        for binding in (o for o in objs if o["kind"].endswith("RoleBinding")):
            if binding["subjects"][0]["name"] != f"lazyload-{service}":
                continue
            role = roles[(binding["roleRef"]["kind"], binding["roleRef"]["name"])]
            for rule in role["rules"]:
                for resource in rule["resources"]:
                    verbs.setdefault(resource, set()).update(rule["verbs"])
        reads = {r for r, v in verbs.items() if not v & WRITE_VERBS}
        writes = {r for r, v in verbs.items() if v & WRITE_VERBS}
        assert table[service] == (reads, writes), service
