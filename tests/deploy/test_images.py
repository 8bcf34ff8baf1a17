"""The images without a container engine: deploy/Dockerfile read instruction by instruction (what
it copies exists, dependencies are installed from the lock file before the source is copied, the
build argument takes exactly the four services, the entrypoint is the service's console script,
OCI labels), its dependency layer's `uv export` run on only the files copied before it, and one
image name scheme in `make images`, docker-compose.yml and the chart."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import CHART, ROOT, helm_tool, values_file

DOCKERFILE = ROOT / "deploy" / "Dockerfile"
SERVICES = ("accesslog-ingest", "fence-reconciler", "sidecar-writer", "global-pilot")
UV = ROOT / ".tools" / "bin" / "uv"
_VAR = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        text = pending + line
        pending = ""
        keyword, _, rest = text.strip().partition(" ")
        out.append((keyword.upper(), rest.strip()))
    assert not pending, f"{path}: a continuation line runs off the end"
    return out


def _stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions:
        if keyword == "FROM":
            stages.append([])
        stages[-1].append((keyword, rest))
    return stages


def _copies(stage: list[tuple[str, str]]) -> list[tuple[int, list[str], str]]:
    """(index in the stage, sources, destination) of each COPY from the build context."""
    found = []
    for i, (keyword, rest) in enumerate(stage):
        if keyword == "COPY" and not rest.startswith("--from"):
            *sources, dest = rest.split()
            found.append((i, sources, dest))
    return found


def _expand(text: str, service: str) -> str:
    return text.replace("${SERVICE}", service).replace("$SERVICE", service)


@pytest.fixture(scope="module")
def stages() -> list[list[tuple[str, str]]]:
    return _stages(_instructions(DOCKERFILE))


def test_dockerfile_build_argument_takes_exactly_the_four_services(stages: list) -> None:
    build, final = stages
    assert ("ARG", "SERVICE") in build and ("ARG", "SERVICE") in final
    check = next(rest for keyword, rest in build if keyword == "RUN" and "case" in rest)
    accepted = re.search(r"case \"\$SERVICE\" in\s+([\w|-]+)\)", check)
    assert accepted and set(accepted.group(1).split("|")) == set(SERVICES)
    with_scripts = {
        p.parent.name
        for p in (ROOT / "services").glob("*/pyproject.toml")
        if tomllib.loads(p.read_text())["project"].get("scripts")
    }
    assert with_scripts == set(SERVICES), "a new service needs its place in deploy/Dockerfile"


@pytest.mark.parametrize("service", SERVICES)
def test_dockerfile_copies_what_exists_and_nothing_ignored(stages: list, service: str) -> None:
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = 0
    for _, sources, _ in _copies(stages[0]):
        for source in sources:
            path = ROOT / _expand(source, service)
            assert path.exists(), f"COPY {source} ({service}): {path} missing"
            rel = path.relative_to(ROOT).as_posix()
            assert not any(Path(rel).match(pattern) for pattern in ignored), rel
            copied += 1
    assert copied >= 6
    assert not _copies(stages[1]), "the runtime stage takes only the build stage's venv"


def test_dependencies_are_installed_before_the_source(stages: list) -> None:
    build = stages[0]
    export = next(i for i, (k, rest) in enumerate(build) if k == "RUN" and "uv export" in rest)
    assert "--frozen" in build[export][1] and "--require-hashes" in build[export][1]
    for i, sources, _ in _copies(build):
        only_metadata = all(s.endswith(("pyproject.toml", "uv.lock")) for s in sources)
        assert only_metadata == (i < export), f"COPY {sources} is on the wrong side of uv export"
    source_install = next(
        i for i, (k, rest) in enumerate(build) if k == "RUN" and "--no-deps" in rest
    )
    assert source_install > max(i for i, _, _ in _copies(build))


@pytest.mark.parametrize("service", SERVICES)
def test_dependency_layer_exports_from_only_the_files_copied_before_it(
    stages: list, service: str, tmp_path: Path
) -> None:
    """`uv export --frozen` as the build runs it, in a directory holding only what the
    Dockerfile copied before that step: it succeeds and lists the service's third-party
    dependencies, and none of the workspace's own packages."""
    if not UV.exists():
        pytest.fail(f"{UV} is missing: run `make setup`", pytrace=False)
    build = stages[0]
    export = next(i for i, (k, rest) in enumerate(build) if k == "RUN" and "uv export" in rest)
    for i, sources, dest in _copies(build):
        if i > export:
            continue
        for source in sources:
            target = tmp_path / _expand(dest, service)
            if dest.endswith("/") or len(sources) > 1:
                target = target / Path(source).name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / _expand(source, service), target)
    command = shlex.split(_expand(build[export][1].split("&&")[0], service))
    assert command[:2] == ["uv", "export"]
    out = tmp_path / "requirements.txt"
    command = [str(UV), *command[1:-1], str(out)] if command[-2] == "-o" else command
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    pinned = {
        m.group(1).lower() for m in re.finditer(r"^([A-Za-z0-9_.-]+)==", out.read_text(), re.M)
    }
    declared = tomllib.loads((ROOT / "services" / service / "pyproject.toml").read_text())
    direct = {
        re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0].lower()
        for d in declared["project"]["dependencies"]
        if not d.startswith("lazyload-")
    }
    assert direct and direct <= {p.replace("_", "-") for p in pinned} | pinned, direct - pinned
    assert not {p for p in pinned if p.startswith("lazyload")}


@pytest.mark.parametrize("service", SERVICES)
def test_entrypoint_is_the_service_console_script(stages: list, service: str) -> None:
    build, final = stages
    assert ("ENTRYPOINT", '["lazyload-service"]') in final
    link = next(rest for k, rest in build if k == "RUN" and "lazyload-service" in rest)
    assert "ln -s lazyload-${SERVICE} /opt/venv/bin/lazyload-service" in link
    assert "test -x /opt/venv/bin/lazyload-${SERVICE}" in link
    scripts = tomllib.loads((ROOT / "services" / service / "pyproject.toml").read_text())
    assert f"lazyload-{service}" in scripts["project"]["scripts"]
    assert ("USER", "10001") in final


def test_oci_labels_take_the_build_arguments_make_passes(stages: list) -> None:
    final = stages[1]
    labels = " ".join(rest for k, rest in final if k == "LABEL")
    for key in ("title", "description", "version", "revision", "created"):
        assert f"org.opencontainers.image.{key}=" in labels, key
    args = {rest.split("=")[0] for k, rest in final if k == "ARG"}
    assert {"VERSION", "REVISION", "CREATED", "SERVICE"} <= args
    for other in ("global-sidecar", "kube-emulator"):
        text = (ROOT / "deploy" / other / "Dockerfile").read_text()
        assert f'org.opencontainers.image.title="lazyload-{other}"' in text


# ---- one image name scheme: make images, docker-compose.yml, the chart ----------------------


def _make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _make_images() -> dict[str, dict[str, Any]]:
    """Image -> {dockerfile, args, context} of each `docker build` that `make images` runs
    (`make -n`; DOCKER=true stands in for an engine that answers)."""
    result = _make("-n", "images", "DOCKER=true")
    assert result.returncode == 0, result.stderr
    builds: dict[str, dict[str, Any]] = {}
    for line in result.stdout.splitlines():
        words = shlex.split(line)
        if words[:2] != ["true", "build"]:
            continue
        tag = words[words.index("-t") + 1]
        build_args = dict(
            words[i + 1].split("=", 1) for i, w in enumerate(words) if w == "--build-arg"
        )
        builds[tag] = {
            "dockerfile": words[words.index("-f") + 1],
            "args": build_args,
            "context": words[-1],
        }
    return builds


def _interpolate(value: str) -> str:
    return _VAR.sub(lambda m: m.group(2) or "", value)


def test_make_compose_and_chart_agree_on_image_names_and_tags(tmp_path: Path) -> None:
    made = _make_images()
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    registry, tag = values["image"]["registry"], chart["appVersion"]
    names = [*SERVICES, "global-sidecar", "kube-emulator"]
    assert set(made) == {f"{registry}/{name}:{tag}" for name in names}
    for service in SERVICES:
        build = made[f"{registry}/{service}:{tag}"]
        assert build["dockerfile"] == "deploy/Dockerfile" and build["context"] == "."
        assert build["args"]["SERVICE"] == service and build["args"]["VERSION"] == tag
    # docker-compose.yml: the same names (its defaults), Dockerfiles, contexts and arguments.
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    built = 0
    for name, service in compose["services"].items():
        image = _interpolate(service.get("image", ""))
        if "build" not in service:
            assert not image.startswith(registry) or image in made, name
            continue
        assert image in made, f"compose {name}: {image} is not an image `make images` builds"
        build = service["build"]
        # compose names the Dockerfile within the context, `docker build -f` from the root
        dockerfile = ROOT / build["context"] / build["dockerfile"]
        assert dockerfile.resolve() == (ROOT / made[image]["dockerfile"]).resolve(), name
        assert Path(build["context"]) == Path(made[image]["context"]), name
        for key, value in (build.get("args") or {}).items():
            assert made[image]["args"][key] == value, (name, key)
        built += 1
    assert built == 6
    # The chart: every image it renders is one `make images` builds.
    result = helm_tool("render", str(CHART), "--values", values_file(tmp_path, {}))
    objs = [m["object"] for m in json.loads(result.stdout)["manifests"]]
    images = {
        c["image"]
        for o in objs
        if o["kind"] in ("Deployment", "Job", "Pod")
        for c in o["spec"].get("template", o)["spec"]["containers"]
        if c["image"].startswith(registry)
    }
    assert images == {f"{registry}/{n}:{tag}" for n in [*SERVICES, "global-sidecar"]}
    assert images <= set(made)


def test_make_images_says_in_one_line_when_there_is_no_engine() -> None:
    result = _make("images", "DOCKER=lazyload-no-such-engine")
    assert result.returncode != 0
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "no container engine" in lines[0] and "lazyload-no-such-engine" in lines[0]
    assert "build" not in result.stdout
