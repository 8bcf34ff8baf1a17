# /// script
# requires-python = ">=3.11"
# dependencies = ["grpcio-tools==1.85.4"]
# ///
"""Regenerate the emulator's Kubernetes protobuf schema from the upstream Go modules.

    uv run --script libs/kube-emulator/scripts/generate_kube_proto.py

Needs Go (for `go mod download`; the modules come from the Go module cache or the module proxy)
and grpcio-tools (installed by `uv run --script` from the header above). Writes, next to
`lazyload_kube_emulator/kubeproto.py`:

- `kubeproto/descriptors.binpb`: a `FileDescriptorSet` that grpcio-tools' protoc compiles from the
  upstream `generated.proto` files (the ones go-to-protobuf generates from the Go types) of the
  packages below, with their imports. The emulator loads it into a private descriptor pool and
  makes message classes from it at run time: no generated `_pb2` modules, no protoc at build time.
- `kubeproto/fields.json`: what protobuf does not say but the JSON form of an object needs, read
  from the same Go packages' struct tags: each field's JSON name when it differs from the proto
  name (`$ref`, `x-kubernetes-...`), whether the Go field is a pointer (then a zero value on the
  wire is a value: `automountServiceAccountToken: false`), whether its JSON tag lacks `omitempty`
  or has `omitzero`, and whether JSON inlines it (`Volume.volumeSource`); also which group
  version each proto package serves and which messages are Go slice types (`Verbs`).

Every field of every message is matched by its protobuf number to a Go struct field; anything
unmatched fails the run, so an upstream change cannot pass unnoticed.
"""

# grpc_tools comes from the script header (uv run --script), not from the main .venv:
# pyright: reportMissingImports=false

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2

KUBE_VERSION = "v0.37.2"
MODULES = ("k8s.io/api", "k8s.io/apimachinery", "k8s.io/apiextensions-apiserver")
# The packages whose kinds the emulator decodes (their imports come along).
PROTO_FILES = (
    "k8s.io/api/core/v1/generated.proto",
    "k8s.io/api/rbac/v1/generated.proto",
    "k8s.io/api/discovery/v1/generated.proto",
    "k8s.io/api/coordination/v1/generated.proto",
    "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1/generated.proto",
    "k8s.io/apimachinery/pkg/apis/meta/v1/generated.proto",
)
OUT = Path(__file__).resolve().parents[1] / "src" / "lazyload_kube_emulator" / "kubeproto"

_STRUCT = re.compile(r"^type (\w+) struct ?\{(\})?$")
_DEFINED = re.compile(r"^type (\w+) \w+\.(\w+)$")
_SLICE_TYPE = re.compile(r"^type (\w+) \[\]")
_FIELD = re.compile(r"^\s+(?:(\w+)\s+)?(\S+)\s+`([^`]*)`")
_TAG = re.compile(r'(\w+):"([^"]*)"')
_GROUP_NAME = re.compile(r"^// \+groupName=(\S*)\s*$", re.M)
_MARSHAL_JSON = re.compile(r"^func \(\w+ \*?(\w+)\) MarshalJSON\(", re.M)


def download(modules: tuple[str, ...]) -> dict[str, dict]:
    """Module path -> `go mod download -json` record (Dir, Sum)."""
    done = subprocess.run(
        ["go", "mod", "download", "-json", *(f"{m}@{KUBE_VERSION}" for m in modules)],
        capture_output=True,
        text=True,
        check=True,
        cwd=tempfile.gettempdir(),
    )
    records = json.loads("[" + done.stdout.replace("}\n{", "},{") + "]")
    return {r["Path"]: r for r in records}


def go_dir(modules: dict[str, dict], go_package: str) -> Path:
    for path, record in sorted(modules.items(), key=lambda item: -len(item[0])):
        if go_package == path or go_package.startswith(path + "/"):
            return Path(record["Dir"]) / go_package[len(path) :].lstrip("/")
    raise SystemExit(f"no downloaded module holds Go package {go_package}")


class GoPackage:
    """What the Go files of one API package say about its types."""

    def __init__(self) -> None:
        self.structs: dict[str, dict[int, dict]] = {}  # name -> {proto number: field facts}
        self.slices: set[str] = set()  # `type Verbs []string`
        self.defined: dict[str, str] = {}  # `type List metav1.List`: List -> List
        self.embeds: dict[str, list[str]] = {}  # struct -> embedded types without protobuf tags
        self.custom_json: set[str] = set()  # types with their own MarshalJSON
        self.group: str | None = None  # the +groupName of doc.go


def parse_go_package(directory: Path) -> GoPackage:
    package = GoPackage()
    structs = package.structs
    for path in sorted(directory.glob("*.go")):
        if path.name.endswith("_test.go") or path.name.startswith("zz_generated"):
            continue
        text = path.read_text()
        if path.name == "doc.go" and (found := _GROUP_NAME.search(text)):
            package.group = found.group(1)
        package.custom_json.update(_MARSHAL_JSON.findall(text))
        current: dict[int, dict] | None = None
        for line in text.splitlines():
            if current is None:
                if match := _STRUCT.match(line):
                    name = match.group(1)
                    structs[name] = {}
                    current = None if match.group(2) else structs[name]
                    embeds = package.embeds.setdefault(name, [])
                elif match := _DEFINED.match(line):
                    package.defined[match.group(1)] = match.group(2)
                elif match := _SLICE_TYPE.match(line):
                    package.slices.add(match.group(1))
                continue
            if line == "}":
                current = None
                continue
            if line.lstrip().startswith("//"):
                continue
            if re.match(r"^\s+\*?(\w+)$", line):  # an embedded type without tags
                embeds.append(line.strip().lstrip("*"))
                continue
            match = _FIELD.match(line)
            if not match:
                continue
            go_name, go_type, tags = match.groups()
            tag = dict(_TAG.findall(tags))
            if "protobuf" not in tag or tag["protobuf"] == "-":
                continue
            proto = tag["protobuf"].split(",")
            json_name, *options = tag.get("json", "").split(",")
            # go-to-protobuf names an unnamed one after the Go field (an embedded one: its type)
            default = go_name or go_type.lstrip("*").rsplit(".", 1)[-1]
            default = default[:1].lower() + default[1:]
            current[int(proto[1])] = {
                "proto": next((p[5:] for p in proto if p.startswith("name=")), default),
                "json": json_name or (go_name or ""),
                "inline": (go_name is None and not json_name) or "inline" in options,
                "pointer": go_type.startswith("*"),
                "omitempty": "omitempty" in options,
                "omitzero": "omitzero" in options,
                "skip": json_name == "-",
            }
    return package


def compile_descriptors(modules: dict[str, dict], work: Path) -> bytes:
    from grpc_tools import protoc

    root = work / "include"
    for path, record in modules.items():
        link = root / path
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(record["Dir"])
    out = work / "descriptors.binpb"
    args = ["protoc", f"-I{root}", f"--descriptor_set_out={out}", "--include_imports"]
    if protoc.main([*args, *PROTO_FILES]) != 0:
        raise SystemExit("protoc failed")
    return out.read_bytes()


def field_table(modules: dict[str, dict], descriptors: bytes) -> dict:
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptors).file
    messages: dict[str, dict[str, list]] = {}
    groups: dict[str, str] = {}
    lists: list[str] = []
    custom: list[str] = []
    unmatched: list[str] = []
    packages = {
        f.options.go_package: parse_go_package(go_dir(modules, f.options.go_package)) for f in files
    }
    for proto_file in files:
        go_package = proto_file.options.go_package
        directory = go_dir(modules, go_package)
        package = packages[go_package]
        if package.group is not None:
            group = package.group
            groups[f"{group}/{directory.name}" if group else directory.name] = proto_file.package
        for message in proto_file.message_type:
            full_name = f"{proto_file.package}.{message.name}"
            names = [f.name for f in message.field]
            embedded = package.embeds.get(message.name, [])
            if message.name in package.custom_json or any(
                e in package.custom_json for e in embedded
            ):  # MarshalJSON of its own or of an embedded type (QuantityValue)
                custom.append(full_name)
                continue
            if message.name in package.slices and names == ["items"]:
                lists.append(full_name)
                continue
            go_fields = package.structs.get(message.name)
            if go_fields is None and message.name in package.defined:  # type List metav1.List
                same = [p.structs.get(package.defined[message.name]) for p in packages.values()]
                go_fields = next((f for f in same if f), None)
            if go_fields is None:
                unmatched.append(f"{full_name}: no Go struct in {go_package}")
                continue
            rows: dict[str, list] = {}
            for field in message.field:
                facts = go_fields.get(field.number)
                if facts is None or facts["proto"] != field.name:
                    unmatched.append(f"{full_name}.{field.name}: no Go field #{field.number}")
                    continue
                flags = "".join(
                    flag
                    for flag, on in (
                        ("p", facts["pointer"]),
                        ("r", not facts["omitempty"]),
                        ("z", facts["omitzero"]),
                        ("i", facts["inline"]),
                        ("-", facts["skip"]),
                    )
                    if on
                )
                if facts["json"] != field.name or flags:
                    rows[field.name] = [facts["json"], flags]
            messages[full_name] = rows
    if unmatched:
        raise SystemExit("Go types and generated.proto disagree:\n  " + "\n  ".join(unmatched))
    return {
        "groups": groups,
        "lists": sorted(lists),
        "custom_json": sorted(custom),
        "fields": messages,
    }


def dump(table: dict) -> str:
    """JSON with one line per message (short diffs when upstream changes a field)."""
    lines = []
    for key, value in sorted(table.items()):
        if key == "fields":
            rows = [
                f"  {json.dumps(m)}: {json.dumps(r, sort_keys=True)}"
                for m, r in sorted(value.items())
            ]
            lines.append('"fields": {\n' + ",\n".join(rows) + "\n}")
        else:
            lines.append(f"{json.dumps(key)}: {json.dumps(value, sort_keys=True)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    modules = download(MODULES)
    with tempfile.TemporaryDirectory() as work:
        descriptors = compile_descriptors(modules, Path(work))
    table = field_table(modules, descriptors)
    table = {
        "source": {
            "generator": "libs/kube-emulator/scripts/generate_kube_proto.py",
            "modules": {m: {"version": r["Version"], "sum": r["Sum"]} for m, r in modules.items()},
            "proto_files": list(PROTO_FILES),
        },
        **table,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "descriptors.binpb").write_bytes(descriptors)
    (args.out / "fields.json").write_text(dump(table))
    print(f"wrote {args.out}/descriptors.binpb ({len(descriptors):,} bytes) and fields.json")


if __name__ == "__main__":
    sys.exit(main())
