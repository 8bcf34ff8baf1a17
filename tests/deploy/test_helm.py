"""The Helm chart, rendered with the Helm SDK (in .venv-helm), linted and validated manifest by
manifest; its RBAC checked against the API paths each service's code uses."""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from deploy_support import (
    CHART,
    RBAC_KINDS,
    ROOT,
    apply_rendered,
    helm_tool,
    name_of,
    read_back,
    tool,
    values_file,
)

NON_DEFAULT: dict[str, Any] = {
    "fullnameOverride": "ll",
    "userRoles": {"aggregateToDefaultRoles": False},
    "nats": {"existingSecret": "my-nats"},
    "mesh": {"clusterDomain": "example.internal", "istioRev": "canary"},
    "accesslogIngest": {
        "replicas": 3,
        "grpcPort": 9082,
        "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 9},
        "config": {"dedup": {"max_edges": 16777216, "refresh_interval": 60.5}},
    },
    "fenceReconciler": {
        "config": {
            "fence": {"recycle_after": 86400, "deny_namespaces": ["kube-system"]},
            "log_level": "DEBUG",
        },
        "podDisruptionBudget": {"enabled": True, "maxUnavailable": 1},
    },
    "sidecarWriter": {
        "config": {"sidecar": {"api_version": "v1beta1", "extra_hosts": ["istio-system/*"]}},
        "extraEnv": [{"name": "LAZYLOAD_KUBE__QPS", "value": "20"}],
    },
    "globalPilot": {"xdsPort": 15010, "config": {"watch": {"endpoints": False}}},
    "globalSidecar": {
        "mode": "namespace",
        "namespaces": ["team-a", "team-b"],
        "listenerPorts": [80, 9080],
    },
}
CASES = {"default": {}, "non-default": NON_DEFAULT}
COMPONENTS = tool("values_schema").COMPONENTS  # values key -> service


def _render(tmp_path_factory: pytest.TempPathFactory, values: dict) -> list[dict[str, Any]]:
    path = values_file(tmp_path_factory.mktemp("values"), values)
    result = helm_tool("render", str(CHART), "--values", path, "--namespace", "mesh-operator")
    return [m["object"] for m in json.loads(result.stdout)["manifests"]]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    return {case: _render(tmp_path_factory, values) for case, values in CASES.items()}


def _of(objs: list[dict], kind: str) -> dict[str, dict]:
    return {
        f"{o['metadata'].get('namespace', '')}/{o['metadata']['name']}": o
        for o in objs
        if o["kind"] == kind
    }


def _env(deployment: dict) -> dict[str, Any]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


@pytest.mark.parametrize("case", CASES)
def test_lint_has_no_errors(tmp_path: Path, case: str) -> None:
    result = helm_tool("lint", str(CHART), "--values", values_file(tmp_path, CASES[case]))
    report = json.loads(result.stdout)
    assert report["errors"] == []
    assert not [m for m in report["messages"] if m["severity"] >= 2], report["messages"]


@pytest.mark.parametrize(
    "bad",
    [
        {"accesslogIngest": {"replicas": "two"}},
        {"globalSidecar": {"mode": "everywhere"}},
        {"globalSidecar": {"mode": "namespace", "namespaces": []}},
        {"globalPilot": {"xdsPort": 70000}},
        {"fenceReconciler": {"config": {"fence": {"recycle_afterr": 1}}}},
        {"fenceReconciler": {"config": {"fence": {"eager": "yes"}}}},
        {"sidecarWriter": {"config": {"sidecar": {"api_version": "v2"}}}},
        {"sidecarWriter": {"config": {"nats": {"url": "nats://x"}}}},  # chart-managed
        {"nats": {"url": "http://nats:4222"}},
        {"replicaCount": 2},
    ],
)
def test_wrong_values_fail_schema_validation(tmp_path: Path, bad: dict) -> None:
    result = helm_tool("schema", str(CHART), "--values", values_file(tmp_path, bad), check=False)
    assert result.returncode == 1, f"accepted: {bad}"


@pytest.mark.parametrize("case", CASES)
def test_good_values_pass_schema_validation(tmp_path: Path, case: str) -> None:
    helm_tool("schema", str(CHART), "--values", values_file(tmp_path, CASES[case]))


@pytest.mark.parametrize("case", CASES)
def test_core_kinds_pass_kubernetes_validate(rendered: dict, tmp_path: Path, case: str) -> None:
    path = tmp_path / "objects.json"
    path.write_text(json.dumps(rendered[case]))
    report = json.loads(helm_tool("validate", str(path)).stdout)
    assert report["failed"] == []
    istio = [o for o in rendered[case] if o["apiVersion"].split("/")[0].endswith(".istio.io")]
    assert len(report["unknown"]) == len(istio)  # only Istio kinds lack a core schema
    assert len(report["passed"]) == len(rendered[case]) - len(istio)


def test_kubernetes_validate_catches_a_broken_deployment(rendered: dict, tmp_path: Path) -> None:
    broken = copy.deepcopy(next(iter(_of(rendered["default"], "Deployment").values())))
    broken["spec"]["replicas"] = "two"
    path = tmp_path / "broken.json"
    path.write_text(json.dumps([broken]))
    assert helm_tool("validate", str(path), check=False).returncode == 1


@pytest.mark.parametrize("case", CASES)
def test_istio_kinds_validate_with_cloudcoil_models(rendered: dict, case: str) -> None:
    from cloudcoil.models.istio.networking import v1alpha3
    from cloudcoil.models.istio.security import v1 as security_v1
    from cloudcoil.models.istio.telemetry import v1 as telemetry_v1

    models = {
        "networking.istio.io/v1alpha3": v1alpha3,
        "security.istio.io/v1": security_v1,
        "telemetry.istio.io/v1": telemetry_v1,
    }
    for obj in rendered[case]:
        if obj["apiVersion"].split("/")[0].endswith(".istio.io"):
            parsed = getattr(models[obj["apiVersion"]], obj["kind"]).model_validate(obj)
            assert parsed.model_dump(by_alias=True, exclude_none=True, mode="json") == obj


def test_servicefence_crd_is_the_repository_one_and_validates_fences(tmp_path: Path) -> None:
    result = helm_tool("render", str(CHART), "--values", values_file(tmp_path, {}))
    crds = json.loads(result.stdout)["crds"]
    assert crds == [yaml.safe_load((ROOT / "deploy/crds/servicefence.yaml").read_text())]
    schema = crds[0]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    fence = {
        "apiVersion": "microservice.slime.io/v1alpha1",
        "kind": "ServiceFence",
        "metadata": {"name": "productpage", "namespace": "demo"},
        "spec": {"enable": True},
    }
    jsonschema.validate(fence, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**fence, "spec": {"enable": "yes"}}, schema)


@pytest.mark.parametrize("case", CASES)
def test_deployments_probes_security_and_settings(rendered: dict, case: str) -> None:
    catalog = tool("settings_catalog")
    deployments = _of(rendered[case], "Deployment")
    for key, service in COMPONENTS.items():
        name = ("ll" if case == "non-default" else "lazyload") + f"-{service}"
        deployment = deployments[f"mesh-operator/{name}"]
        spec = deployment["spec"]["template"]["spec"]
        container = spec["containers"][0]
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert spec["serviceAccountName"] == name
        env = _env(deployment)
        unknown = {k for k in env if k.startswith("LAZYLOAD_")} - catalog.env_names(service)
        assert not unknown, f"{service}: {unknown}"
        plain = {k: v for k, v in env.items() if isinstance(v, str)}
        saved = dict(os.environ)
        try:
            os.environ.update(plain)
            settings = catalog.settings_class(service)()
        finally:
            os.environ.clear()
            os.environ.update(saved)
        admin = next(p for p in container["ports"] if p["name"] == "admin")
        assert settings.admin.port == admin["containerPort"]
        rev = CASES[case].get("mesh", {}).get("istioRev", "")
        if service == "fence-reconciler":
            assert settings.fence.istio_rev == rev
        if service == "sidecar-writer":
            assert settings.sidecar.revision == rev
        values = CASES[case].get(key, {})
        if values.get("autoscaling", {}).get("enabled"):
            assert "replicas" not in deployment["spec"]
        elif "replicas" in values:
            assert deployment["spec"]["replicas"] == values["replicas"]
        for group, inner in values.get("config", {}).items():
            if isinstance(inner, dict):
                for field, value in inner.items():
                    assert getattr(getattr(settings, group), field) in (
                        value,
                        tuple(value) if isinstance(value, list) else value,
                    )
            else:
                assert getattr(settings, group) == inner


@pytest.mark.parametrize("case", CASES)
def test_ports_secrets_and_bootstrap_agree(rendered: dict, case: str) -> None:
    render = tool("render_bootstrap")
    objs = rendered[case]
    prefix = "ll" if case == "non-default" else "lazyload"
    domain = CASES[case].get("mesh", {}).get("clusterDomain", "cluster.local")
    services, deployments = _of(objs, "Service"), _of(objs, "Deployment")
    pilot_env = _env(deployments[f"mesh-operator/{prefix}-global-pilot"])
    ingest_svc = services[f"mesh-operator/{prefix}-accesslog-ingest"]
    als = next(p for p in ingest_svc["spec"]["ports"] if p["name"] == "grpc-als")
    # The global-sidecars stream to the headless Service: their STRICT_DNS cluster resolves
    # every ingest pod, so the streams spread over all replicas.
    headless = services[f"mesh-operator/{prefix}-als-headless"]
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"] == ingest_svc["spec"]["selector"]
    assert headless["spec"]["ports"] == [als]
    assert pilot_env["LAZYLOAD_ALS__HOST"] == f"{prefix}-als-headless.mesh-operator.svc.{domain}"
    assert pilot_env["LAZYLOAD_ALS__PORT"] == str(als["port"])
    ingest_env = _env(deployments[f"mesh-operator/{prefix}-accesslog-ingest"])
    assert ingest_env["LAZYLOAD_GRPC__PORT"] == str(als["port"])
    pilot_svc = services[f"mesh-operator/{prefix}-global-pilot"]
    xds = next(p for p in pilot_svc["spec"]["ports"] if p["name"] == "grpc-xds")
    assert pilot_env["LAZYLOAD_XDS__PORT"] == str(xds["port"])
    secret = CASES[case].get("nats", {}).get("existingSecret") or f"{prefix}-nats"
    assert ingest_env["LAZYLOAD_NATS__URL"] == {"secretKeyRef": {"name": secret, "key": "url"}}
    assert (f"mesh-operator/{prefix}-nats" in _of(objs, "Secret")) == (case == "default")
    gs = CASES[case].get("globalSidecar", {})
    namespaces = gs.get("namespaces") if gs.get("mode") == "namespace" else ["mesh-operator"]
    ports = gs.get("listenerPorts", [80])
    assert pilot_env["LAZYLOAD_LISTENER__PORTS"] == ",".join(map(str, ports))
    for ns in namespaces:
        config = _of(objs, "ConfigMap")[f"{ns}/{prefix}-global-sidecar-bootstrap"]
        wanted = render.bootstrap(
            xds_host=f"{prefix}-global-pilot.mesh-operator.svc.{domain}", xds_port=xds["port"]
        )
        assert json.loads(config["data"]["bootstrap.json"]) == wanted
        svc = services[f"{ns}/{prefix}-global-sidecar"]
        assert [p["port"] for p in svc["spec"]["ports"]] == ports
        assert f"{ns}/{prefix}-global-sidecar" in deployments
    assert {o["kind"] for o in objs if o["kind"] == "HorizontalPodAutoscaler"} == (
        {"HorizontalPodAutoscaler"} if case == "non-default" else set()
    )
    # PDBs only where 2 or more replicas run (ingest, global-pilot, the global-sidecars): one of
    # a single replica would block every drain.
    pdbs = _of(objs, "PodDisruptionBudget")
    assert set(pdbs) == {
        f"mesh-operator/{prefix}-accesslog-ingest",
        f"mesh-operator/{prefix}-global-pilot",
        *(f"{ns}/{prefix}-global-sidecar" for ns in namespaces),
    }


# ---- RBAC against the code ----------------------------------------------------------------

# Every Kubernetes resource the services may name in an API path, with its group.
RESOURCE_GROUPS = {
    "services": "",
    "endpoints": "",
    "pods": "",
    "namespaces": "",
    "configmaps": "",
    "secrets": "",
    "events": "",
    "endpointslices": "discovery.k8s.io",
    "leases": "coordination.k8s.io",
    "servicefences": "microservice.slime.io",
    "sidecars": "networking.istio.io",
    "envoyfilters": "networking.istio.io",
    "serviceentries": "networking.istio.io",
    "virtualservices": "networking.istio.io",
    "destinationrules": "networking.istio.io",
}
READ = frozenset({"get", "list", "watch"})
MANAGE = READ | {"create", "update", "patch", "delete"}
"""Every verb: the objects a service owns."""
# What issue 7 allows each service (least privilege): nothing beyond this may be granted.
ALLOWED = {
    "accesslog-ingest": {("", r): READ for r in ("endpoints", "services", "pods")}
    | {("discovery.k8s.io", "endpointslices"): READ}
    | {("networking.istio.io", "serviceentries"): READ},
    "fence-reconciler": {
        # read only: tombstones live in a ConfigMap of the release namespace, not on Services
        ("", "services"): READ,
        # the tombstones' ConfigMap (a Role in the release namespace; patch by name only)
        ("", "configmaps"): {"get", "list", "watch", "create", "patch"},
        # workload fences (fence.workload_label_key) watch the pods that carry the label
        ("", "pods"): READ,
        ("", "namespaces"): READ,
        ("discovery.k8s.io", "endpointslices"): READ,
        ("networking.istio.io", "virtualservices"): READ,
        ("networking.istio.io", "serviceentries"): READ,
        ("microservice.slime.io", "servicefences"): MANAGE,
        ("microservice.slime.io", "servicefences/status"): {"get", "update", "patch"},
        # the admin API's resets: TokenReview + SubjectAccessReview of the caller's token
        ("authentication.k8s.io", "tokenreviews"): {"create"},
        ("authorization.k8s.io", "subjectaccessreviews"): {"create"},
    },
    "sidecar-writer": {
        ("networking.istio.io", "sidecars"): MANAGE,
        ("microservice.slime.io", "servicefences"): READ,
        # the SidecarReady condition and conflict Events (settings sidecar.fence_status)
        ("microservice.slime.io", "servicefences/status"): {"get", "update", "patch"},
        ("", "events"): {"create"},
    },
    "global-pilot": {
        ("", "services"): MANAGE,
        ("", "endpoints"): READ,
        ("discovery.k8s.io", "endpointslices"): READ,
        ("networking.istio.io", "serviceentries"): READ,
        ("networking.istio.io", "envoyfilters"): MANAGE,
        # the global-sidecar's DestinationRule (useClientProtocol: h2 first calls)
        ("networking.istio.io", "destinationrules"): MANAGE,
    },
}
WRITE_CALLS = {
    "create": re.compile(r"\.create\b"),
    "update": re.compile(r"\.replace\b"),
    "patch": re.compile(r"\.(merge_patch|json_patch)\b"),
    "delete": re.compile(r"\.delete\b|\"DELETE\""),
}


def _source_calls(service: str) -> dict[tuple[str, str], set[str]]:
    """(group, resource) -> verbs, from the API paths and KubeApi calls in the service's code.

    A file naming a resource in a path (`/services`, `PLURAL = "servicefences"`, ...) needs to
    read it (get, list, watch); write calls in the same file (`.create`, `.replace`,
    `.merge_patch`, `.delete`) need those verbs too, and `/status` the status subresource.
    """
    src = ROOT / "services" / service / "src"
    plurals = {
        m.group(1)
        for f in src.rglob("*.py")
        for m in re.finditer(r'PLURAL\s*=\s*"(\w+)"', f.read_text())
    }
    calls: dict[tuple[str, str], set[str]] = {}
    for path in src.rglob("*.py"):
        text = path.read_text()
        named = {
            m.group(1)
            for m in re.finditer(r"/(\w+)(?![\w/]*\{namespace)(?=[\"/{?]|$)", text)
            if m.group(1) in RESOURCE_GROUPS
        }
        named -= {"namespaces"} if not re.search(r"/namespaces[\"']", text) else set()
        if re.search(r"\{[\w.]*PLURAL\}", text):
            named |= plurals
        writes = {verb for verb, rx in WRITE_CALLS.items() if rx.search(text)}
        for resource in named:
            key = (RESOURCE_GROUPS[resource], resource)
            calls.setdefault(key, set()).update({"get", "list", "watch"} | writes)
            if "/status" in text and key[0] in ("microservice.slime.io", "networking.istio.io"):
                calls.setdefault((key[0], f"{resource}/status"), set()).update({"get", "update"})
    return calls


def _granted(
    objs: list[dict], service: str, prefix: str = "lazyload"
) -> dict[tuple[str, str], set[str]]:
    sa = f"{prefix}-{service}"
    roles = {
        (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o
        for o in objs
        if o["kind"] in ("Role", "ClusterRole")
    }
    granted: dict[tuple[str, str], set[str]] = {}
    for binding in (o for o in objs if o["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        if not any(s["name"] == sa for s in binding["subjects"]):
            continue
        ref = binding["roleRef"]
        ns = binding["metadata"].get("namespace", "") if ref["kind"] == "Role" else ""
        for rule in roles[(ref["kind"], ns, ref["name"])]["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


@pytest.mark.parametrize("service", list(ALLOWED))
def test_rbac_covers_every_api_call_of_the_service(rendered: dict, service: str) -> None:
    calls = _source_calls(service)
    assert calls, f"no API path found in {service}'s code"
    granted = _granted(rendered["default"], service)
    for key, verbs in calls.items():
        # Resources: every one the code names must be granted. Verbs: the write calls of a file
        # are attributed to each resource it names, so only the allowed ones are required.
        needed = verbs & ALLOWED[service].get(key, READ)
        missing = needed - granted.get(key, set())
        assert not missing, f"{service} calls {key} with {missing}, not granted by its Role"


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("service", list(ALLOWED))
def test_rbac_is_least_privilege(rendered: dict, case: str, service: str) -> None:
    granted = _granted(rendered[case], service, "ll" if case == "non-default" else "lazyload")
    for key, verbs in granted.items():
        extra = verbs - ALLOWED[service].get(key, set())
        assert not extra, f"{service} is granted {extra} on {key}"
    assert "*" not in json.dumps([o for o in rendered[case] if o["kind"].endswith("Role")])


def _roles(objs: list[dict], service: str, prefix: str = "lazyload") -> dict[str, dict]:
    """namespace/name (cluster-wide: /name) -> the Role or ClusterRole bound to the service."""
    bound = {
        (b["roleRef"]["kind"], b["metadata"].get("namespace", ""), b["roleRef"]["name"])
        for b in objs
        if b["kind"] in ("RoleBinding", "ClusterRoleBinding")
        and any(s["name"] == f"{prefix}-{service}" for s in b["subjects"])
    }
    return {
        f"{o['metadata'].get('namespace', '')}/{o['metadata']['name']}": o
        for o in objs
        if (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]) in bound
    }


def _writes(role: dict) -> dict[str, set[str]]:
    """resource -> the write verbs a role grants (with their resourceNames, when limited)."""
    found: dict[str, set[str]] = {}
    for rule in role["rules"]:
        for resource in rule["resources"]:
            for verb in set(rule["verbs"]) - {"get", "list", "watch"}:
                names = ",".join(rule.get("resourceNames", []))
                found.setdefault(resource, set()).add(f"{verb}:{names}" if names else verb)
    return found


def test_global_pilot_writes_only_where_its_mode_puts_objects(rendered: dict) -> None:
    """Cluster mode: the global-sidecar's Service and DestinationRule in the release namespace,
    the EnvoyFilter in Istio's root namespace; namespace mode: all three in each listed
    namespace; each by name (create cannot be limited by name); cluster-wide only reads (#16)."""
    filter_named = {"update:to-global-sidecar", "patch:to-global-sidecar"}
    roles = _roles(rendered["default"], "global-pilot")
    assert set(roles) == {
        "/lazyload-global-pilot",
        "mesh-operator/lazyload-global-pilot-global-sidecar",
        "istio-system/lazyload-global-pilot-envoyfilter",
    }
    assert not _writes(roles["/lazyload-global-pilot"])
    sidecar = _writes(roles["mesh-operator/lazyload-global-pilot-global-sidecar"])
    assert set(sidecar) == {"services", "destinationrules"}
    by_name = {f"{v}:lazyload-global-sidecar" for v in ("update", "patch", "delete")}
    assert sidecar == {"services": {"create", *by_name}, "destinationrules": {"create", *by_name}}
    assert _writes(roles["istio-system/lazyload-global-pilot-envoyfilter"]) == {
        "envoyfilters": {"create", "delete:to-global-sidecar", *filter_named}
    }
    roles = _roles(rendered["non-default"], "global-pilot", "ll")
    assert set(roles) == {
        "/ll-global-pilot",
        "team-a/ll-global-pilot-global-sidecar",
        "team-b/ll-global-pilot-global-sidecar",
    }
    for ns in ("team-a", "team-b"):
        writes = _writes(roles[f"{ns}/ll-global-pilot-global-sidecar"])
        assert set(writes) == {"services", "destinationrules", "envoyfilters"}
        assert writes["envoyfilters"] >= {"create", *filter_named}
        assert not {"update", "patch", "delete"} & set().union(*writes.values())


def test_fence_reconciler_writes_tombstones_not_services(rendered: dict) -> None:
    """No cluster-wide patch of Services: the tombstones' ConfigMap, by name, in the release
    namespace, and its name is the one the reconciler is configured with (#16)."""
    for case, prefix in (("default", "lazyload"), ("non-default", "ll")):
        roles = _roles(rendered[case], "fence-reconciler", prefix)
        assert set(roles) == {
            f"/{prefix}-fence-reconciler",
            f"mesh-operator/{prefix}-fence-reconciler-tombstones",
        }
        assert "services" not in _writes(roles[f"/{prefix}-fence-reconciler"])
        name = f"{prefix}-fence-tombstones"
        tombstones = _writes(roles[f"mesh-operator/{prefix}-fence-reconciler-tombstones"])
        assert tombstones == {"configmaps": {"create", f"patch:{name}"}}
        deployment = _of(rendered[case], "Deployment")[f"mesh-operator/{prefix}-fence-reconciler"]
        assert _env(deployment)["LAZYLOAD_FENCE__TOMBSTONE_CONFIG_MAP"] == name


def test_user_roles_are_unbound_and_join_view_and_edit(rendered: dict, tmp_path: Path) -> None:
    """templates/user-roles.yaml: <release>-view reads fences and Sidecars, <release>-edit writes
    fences and resets them (servicefences/status update), <release>-cli uses the pod proxy in the
    release namespace; the chart binds none of them, and the first two carry the aggregation
    labels of Kubernetes' view and edit only while userRoles.aggregateToDefaultRoles is on
    (tests/e2e/test_cli_cluster.py runs the CLI under them on a real API server)."""
    aggregate = "rbac.authorization.k8s.io/aggregate-to-"
    for case, prefix in (("default", "lazyload"), ("non-default", "ll")):
        objs = rendered[case]
        users = {
            f"{o['kind']}/{o['metadata'].get('namespace', '')}/{o['metadata']['name']}": o
            for o in objs
            if o["metadata"]["labels"].get("app.kubernetes.io/component") == "user-roles"
        }
        assert set(users) == {
            f"ClusterRole//{prefix}-view",
            f"ClusterRole//{prefix}-edit",
            f"Role/mesh-operator/{prefix}-cli",
        }
        bound = {b["roleRef"]["name"] for b in objs if b["kind"].endswith("Binding")}
        assert not bound & {o["metadata"]["name"] for o in users.values()}
        view, edit = users[f"ClusterRole//{prefix}-view"], users[f"ClusterRole//{prefix}-edit"]
        assert not _writes(view)
        assert _writes(edit) == {
            "servicefences": {"create", "update", "patch", "delete", "deletecollection"},
            "servicefences/status": {"update"},
        }
        assert _writes(users[f"Role/mesh-operator/{prefix}-cli"]) == {"pods/proxy": {"create"}}
        labels = {
            role: {
                k
                for k in users[f"ClusterRole//{prefix}-{role}"]["metadata"]["labels"]
                if k.startswith(aggregate)
            }
            for role in ("view", "edit")
        }
        on = case == "default"
        assert labels == {
            "view": {f"{aggregate}view"} if on else set(),
            "edit": {f"{aggregate}edit"} if on else set(),
        }
    path = values_file(tmp_path, {"userRoles": {"enabled": False}})
    result = helm_tool("render", str(CHART), "--values", path, "--namespace", "mesh-operator")
    kinds = [m["object"]["metadata"]["name"] for m in json.loads(result.stdout)["manifests"]]
    assert not {"lazyload-view", "lazyload-edit", "lazyload-cli"} & set(kinds)


@pytest.fixture
def kube_emulator_crd_dirs() -> list[Path]:
    return []  # the test applies the chart's CRD itself


def test_rendered_crd_applies_to_the_emulator(
    kube_emulator, rendered: dict, tmp_path: Path
) -> None:
    from kubernetes import client

    api = kube_emulator.api_client()
    crd = yaml.safe_load((CHART / "crds" / "servicefence.yaml").read_text())
    client.ApiextensionsV1Api(api).create_custom_resource_definition(crd)
    custom = client.CustomObjectsApi(api)
    client.CoreV1Api(api).create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name="demo"))
    )
    fence = {
        "apiVersion": "microservice.slime.io/v1alpha1",
        "kind": "ServiceFence",
        "metadata": {"name": "productpage"},
        "spec": {"enable": True},
    }
    custom.create_namespaced_custom_object(
        "microservice.slime.io", "v1alpha1", "demo", "servicefences", fence
    )
    with pytest.raises(client.ApiException) as error:
        bad = {**fence, "metadata": {"name": "bad"}, "spec": {"enable": "yes"}}
        custom.create_namespaced_custom_object(
            "microservice.slime.io", "v1alpha1", "demo", "servicefences", bad
        )
    assert error.value.status == 422
    # Rendered objects of kinds the emulator serves go in too, the RBAC ones included.
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="mesh-operator")))
    applied = apply_rendered(api, rendered["default"], RBAC_KINDS | {"ConfigMap", "Service"})
    assert {name_of(s) for s in core.list_namespaced_service("mesh-operator").items} == {
        "lazyload-accesslog-ingest",
        "lazyload-als-headless",
        "lazyload-global-pilot",
        "lazyload-global-sidecar",
    }
    rbac = client.RbacAuthorizationV1Api(api)
    # one ServiceAccount per service, plus the global-sidecar's own identity (no role) and the
    # `helm test` Pod's (two Roles: the release's Deployments, the round trip's objects); two
    # ClusterRoles and a Role for users, bound by no one (templates/user-roles.yaml)
    assert applied["ServiceAccount"] - 2 == applied["ClusterRole"] - 2 == len(ALLOWED)
    # global-pilot's in the release and Istio's namespace, the reconciler's tombstones', helm
    # test's, the users' CLI Role
    assert applied["ClusterRoleBinding"] == len(ALLOWED) and applied["Role"] == 6
    for obj in rendered["default"]:
        if obj["kind"] not in RBAC_KINDS:
            continue
        stored = read_back(api, obj)
        assert stored["metadata"]["uid"], obj["metadata"]["name"]
        for field in ("rules", "roleRef", "subjects"):
            assert stored.get(field) == obj.get(field), (obj["kind"], field)
    accounts = core.list_namespaced_service_account("mesh-operator").items
    assert {name_of(a) for a in accounts} == {
        f"lazyload-{s}" for s in [*ALLOWED, "global-sidecar", "helm-test"]
    }
    for binding in rbac.list_cluster_role_binding().items:
        assert binding.subjects, name_of(binding)
        subject = binding.subjects[0]
        assert subject.name in {name_of(a) for a in accounts}
        assert rbac.read_cluster_role(binding.role_ref.name).rules


def test_sidecar_access_logs_make_the_liveness_source(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Recycling needs a liveness source: with sidecarAccessLogs the chart renders a mesh-wide
    Telemetry (Istio's root namespace) sending every sidecar's access log to the providers, and
    tells the reconciler (LAZYLOAD_FENCE__LIVENESS_SOURCE); without it, neither."""
    values = {
        "sidecarAccessLogs": {"enabled": True},
        "fenceReconciler": {"config": {"fence": {"recycle_after": 86400}}},
    }
    objs = _render(tmp_path_factory, values)
    telemetry = _of(objs, "Telemetry")["istio-system/lazyload-liveness"]
    providers = telemetry["spec"]["accessLogging"][0]["providers"]
    assert [p["name"] for p in providers] == ["lazyload-als-http", "lazyload-als-tcp"]
    env = _env(_of(objs, "Deployment")["mesh-operator/lazyload-fence-reconciler"])
    assert env["LAZYLOAD_FENCE__LIVENESS_SOURCE"] == "sidecar-als"
    plain = _render(tmp_path_factory, {})
    assert not _of(plain, "Telemetry")
    env = _env(_of(plain, "Deployment")["mesh-operator/lazyload-fence-reconciler"])
    assert "LAZYLOAD_FENCE__LIVENESS_SOURCE" not in env


def test_network_policies_let_in_only_who_needs_each_port(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """ALS only from the global-sidecars (its mesh port from every pod with sidecarAccessLogs), xDS
    only from the global-sidecars - both in the namespaces the chart runs them in - admin only from
    the monitoring namespace (#16)."""
    objs = _render(tmp_path_factory, {})
    policies = _of(objs, "NetworkPolicy")
    names = {f"mesh-operator/lazyload-{c}" for c in COMPONENTS.values()}
    assert set(policies) == names
    global_sidecars = {
        "matchLabels": {
            "app.kubernetes.io/instance": "lazyload",
            "app.kubernetes.io/component": "global-sidecar",
        }
    }

    def rules(component: str) -> dict[str, list[dict[str, Any]]]:
        spec = policies[f"mesh-operator/lazyload-{component}"]["spec"]
        assert spec["policyTypes"] == ["Ingress"]
        return {rule["ports"][0]["port"]: rule["from"] for rule in spec["ingress"]}

    monitoring = {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    for component in COMPONENTS.values():
        assert rules(component)["admin"] == [{"namespaceSelector": monitoring}]

    def where(*names: str) -> dict[str, Any]:
        key = "kubernetes.io/metadata.name"
        return {"matchExpressions": [{"key": key, "operator": "In", "values": list(names)}]}

    assert rules("accesslog-ingest")["grpc-als"] == [
        {"namespaceSelector": where("mesh-operator"), "podSelector": global_sidecars}
    ]
    assert rules("global-pilot")["grpc-xds"] == [
        {"namespaceSelector": where("mesh-operator"), "podSelector": global_sidecars}
    ]
    spread = {"globalSidecar": {"mode": "namespace", "namespaces": ["team-a", "team-b"]}}
    policies = _of(_render(tmp_path_factory, spread), "NetworkPolicy")
    for component, port in (("accesslog-ingest", "grpc-als"), ("global-pilot", "grpc-xds")):
        assert rules(component)[port] == [
            {"namespaceSelector": where("team-a", "team-b"), "podSelector": global_sidecars}
        ]
    assert set(rules("fence-reconciler")) == {"admin"}
    everyone = _of(
        _render(
            tmp_path_factory,
            {"sidecarAccessLogs": {"enabled": True}},
        ),
        "NetworkPolicy",
    )
    ingress = everyone["mesh-operator/lazyload-accesslog-ingest"]["spec"]["ingress"]
    by_port = {rule["ports"][0]["port"]: rule["from"] for rule in ingress}
    assert by_port["grpc-als"] == [
        {"namespaceSelector": where("mesh-operator"), "podSelector": global_sidecars}
    ]
    assert by_port["grpc-als-mesh"] == [{"namespaceSelector": {}}]
    assert not _of(
        _render(tmp_path_factory, {"networkPolicy": {"enabled": False}}), "NetworkPolicy"
    )
