"""docker-compose.yml against the compose specification's JSON schema and against the code."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jsonschema
import pytest
import yaml
from deploy_support import ROOT, helm_python, tool

COMPOSE = ROOT / "docker-compose.yml"
SERVICES = ("accesslog-ingest", "fence-reconciler", "sidecar-writer", "global-pilot")
_VAR = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def _interpolate(value: Any) -> Any:
    """Compose's ${VAR:-default} with nothing set in the environment."""
    if isinstance(value, str):
        return _VAR.sub(lambda m: m.group(2) or "", value)
    if isinstance(value, list):
        return [_interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: _interpolate(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _interpolate(yaml.safe_load(COMPOSE.read_text()))


def _mounts(volumes: list[Any]) -> dict[str, str]:
    """target -> source of a service's volumes, short (`src:dst[:ro]`) or long syntax."""
    mounts = {}
    for v in volumes:
        if isinstance(v, dict):
            mounts[v["target"]] = v["source"]
        else:
            mounts[v.split(":")[1]] = v.split(":")[0]
    return mounts


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def test_compose_file_matches_the_compose_specification_schema(compose: dict) -> None:
    # The compose-spec schema as vendored by check-jsonschema (installed in .venv-helm).
    found = sorted(
        (helm_python().parents[1] / "lib").glob(
            "python3*/site-packages/check_jsonschema/builtin_schemas/vendor/compose-spec.json"
        )
    )
    assert found, "check-jsonschema is missing from .venv-helm: run `make setup`"
    schema = json.loads(found[0].read_text())
    jsonschema.validate(compose, schema)
    bad = dict(compose)
    bad["services"] = {**compose["services"], "nats": {**compose["services"]["nats"], "ports": 1}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_every_build_context_and_dockerfile_exists(compose: dict) -> None:
    built = 0
    for name, service in compose["services"].items():
        build = service.get("build")
        if build is None:
            assert "image" in service, name
            continue
        context = ROOT / (build if isinstance(build, str) else build["context"])
        dockerfile = (
            "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        )
        assert context.is_dir(), f"{name}: no build context {context}"
        assert (context / dockerfile).is_file(), f"{name}: no {dockerfile} in {context}"
        args = {} if isinstance(build, str) else build.get("args") or {}
        for line in (context / dockerfile).read_text().splitlines():
            if line.startswith("COPY") and "--from" not in line:
                for source in line.split()[1:-1]:
                    for arg, value in args.items():
                        source = source.replace(f"${{{arg}}}", value)
                    assert (context / source).exists(), f"{name}: COPY {source} missing"
        built += 1
    assert built == 6


def test_the_four_services_and_the_infrastructure_are_there(compose: dict) -> None:
    services = compose["services"]
    assert set(SERVICES) | {"nats", "kube-emulator", "global-sidecar"} <= set(services)
    nats = services["nats"]
    assert "--jetstream" in nats["command"] or "-js" in nats["command"]
    store = nats["command"][nats["command"].index("--store_dir") + 1]
    volumes = _mounts(nats["volumes"])
    assert volumes[store] in compose["volumes"], "JetStream must store on a named volume"
    demo = [n for n, s in services.items() if "demo" in s.get("profiles", [])]
    assert {"productpage", "details", "reviews", "ratings", "demo-seed"} <= set(demo)


@pytest.mark.parametrize("service", SERVICES)
def test_every_lazyload_variable_is_one_the_service_reads(compose: dict, service: str) -> None:
    valid = tool("settings_catalog").env_names(service)
    env = _env(compose["services"][service])
    unknown = {k for k in env if k.startswith("LAZYLOAD_")} - valid
    assert not unknown, f"{service} sets variables its settings do not read: {unknown}"
    settings = tool("settings_catalog").settings_class(service)
    import os

    saved = dict(os.environ)
    try:
        os.environ.update(env)
        parsed = settings()  # the values parse with the service's own model
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert parsed.admin.port == 8080  # the Dockerfile's HEALTHCHECK port


def test_ports_and_service_names_agree(compose: dict) -> None:
    services = compose["services"]
    ingest, pilot = _env(services["accesslog-ingest"]), _env(services["global-pilot"])
    assert pilot["LAZYLOAD_ALS__HOST"] == "accesslog-ingest"
    assert pilot["LAZYLOAD_ALS__PORT"] == ingest["LAZYLOAD_GRPC__PORT"]
    for name in ("accesslog-ingest", "fence-reconciler", "sidecar-writer"):
        url = urlparse(_env(services[name])["LAZYLOAD_NATS__URL"])
        assert url.hostname in services and url.port == 4222, name
    # The global-sidecar's bootstrap points at global-pilot's xDS port.
    render = tool("render_bootstrap")
    assert render.XDS_HOST in services
    assert str(render.XDS_PORT) == pilot["LAZYLOAD_XDS__PORT"]
    listener_ports = {int(p) for p in pilot["LAZYLOAD_LISTENER__PORTS"].split(",")}
    sidecar_ports = {int(p.rsplit(":", 1)[1]) for p in services["global-sidecar"]["ports"]}
    assert sidecar_ports <= listener_ports
    for name, service in services.items():
        for dep in service.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown {dep}"


def test_bootstrap_file_is_the_rendered_one() -> None:
    render = tool("render_bootstrap")
    assert render.OUT.read_text() == render.text(render.bootstrap()), (
        "run deploy/tools/render_bootstrap.py"
    )


def _flag(command: list[str], name: str) -> str:
    return next(a.split("=", 1)[1] for a in command if a.startswith(f"--{name}="))


def _emulator_kubeconfig(tmp_path: Path, *args: str) -> dict[str, Any]:
    """The kubeconfig `lazyload-kube-emulator ARGS` writes (run on a free local port)."""
    out = tmp_path / "kubeconfig"
    command = [sys.executable, "-m", "lazyload_kube_emulator", *args, "--kubeconfig-out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not out.exists():
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "the emulator never wrote its kubeconfig"
            time.sleep(0.05)
        return yaml.safe_load(out.read_text())
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=15)


def test_kubeconfig_is_the_one_the_emulator_advertises(compose: dict, tmp_path: Path) -> None:
    command = compose["services"]["kube-emulator"]["command"]
    advertised = urlparse(_flag(command, "advertise-url"))
    assert advertised.hostname == "kube-emulator" and advertised.hostname in compose["services"]
    assert str(advertised.port) == _flag(command, "port")
    path = ROOT / "deploy" / "compose" / "kubeconfig.yaml"
    written = _emulator_kubeconfig(
        tmp_path, "--port", "0", "--advertise-url", _flag(command, "advertise-url")
    )
    assert written["clusters"][0]["cluster"]["server"] == "http://kube-emulator:6443"
    assert yaml.safe_load(path.read_text()) == written, "regenerate deploy/compose/kubeconfig.yaml"
    for name in SERVICES:
        service = compose["services"][name]
        mounts = _mounts(service["volumes"])
        target = _env(service)["LAZYLOAD_KUBE__KUBECONFIG"]
        assert (ROOT / mounts[target]).resolve() == path.resolve(), name


def test_demo_endpoints_are_the_demo_containers(compose: dict) -> None:
    mesh = [
        o for o in yaml.safe_load_all((ROOT / "deploy/compose/demo/mesh.yaml").read_text()) if o
    ]
    for obj in mesh:
        if obj["kind"] != "Endpoints":
            continue
        name = obj["metadata"]["name"]
        ip = obj["subsets"][0]["addresses"][0]["ip"]
        networks = compose["services"][name]["networks"]
        assert networks["lazyload"]["ipv4_address"] == ip, name
    seed = compose["services"]["demo-seed"]
    assert Path(ROOT / seed["volumes"][0].split(":")[0], "seed.py").is_file()
