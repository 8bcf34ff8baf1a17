"""Type stubs (.pyi) of the generated protobuf modules lazyload's code imports, for pyright.

xds-protos (Envoy, xDS, udpa, validate...) ships its `_pb2` modules without stubs, and their
message classes are made at import time, so pyright would see none of their fields. This imports
every `*_pb2` module the code under services/, libs/ and cli/ imports, takes the descriptors they
loaded (and those they depend on) and has mypy-protobuf write a stub per .proto file into the
directory given (`make lint`: .tools/typings, the `stubPath` of [tool.pyright]). The protobuf
runtime and its well-known types (google/protobuf/*) are types-protobuf's.

    python tools/protobuf_stubs.py OUTPUT_DIR
"""

from __future__ import annotations

import argparse
import importlib
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2
from google.protobuf.descriptor import FileDescriptor
from mypy_protobuf import main as mypy_protobuf

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("services", "libs", "cli")
IMPORT = re.compile(r"^from ([\w.]+) import ([\w, ]+)$|^import ([\w.]+_pb2)\b", re.M)


def imported_pb2_modules(root: Path = ROOT) -> set[str]:
    """Names of the `*_pb2` modules imported by the code below `root`'s SOURCES."""
    found: set[str] = set()
    for top in SOURCES:
        for path in (root / top).rglob("*.py"):
            if ".venv" in path.parts:
                continue
            for package, names, module in IMPORT.findall(path.read_text()):
                if module:
                    found.add(module)
                for name in names.split(","):
                    name = name.strip().split(" as ")[0].strip()
                    if name.endswith(("_pb2", "_pb2_grpc")):
                        found.add(f"{package}.{name.removesuffix('_grpc')}")
                if package.endswith("_pb2"):
                    found.add(package)
    return {m for m in found if not m.startswith("google.protobuf")}


def _closure(files: Iterable[FileDescriptor]) -> list[FileDescriptor]:
    """`files` and everything they depend on, dependencies first."""
    ordered: list[FileDescriptor] = []
    seen: set[str] = set()

    def visit(fd: FileDescriptor) -> None:
        if fd.name in seen:
            return
        seen.add(fd.name)
        for dep in fd.dependencies:
            visit(dep)
        ordered.append(fd)

    for fd in files:
        visit(fd)
    return ordered


def write_stubs(output: Path, modules: Iterable[str]) -> int:
    """Write the stubs of `modules` and their dependencies below `output`; how many."""
    loaded = [importlib.import_module(m).DESCRIPTOR for m in sorted(modules)]
    files = _closure(loaded)
    request = plugin_pb2.CodeGeneratorRequest()
    for fd in files:
        proto = descriptor_pb2.FileDescriptorProto()
        fd.CopyToProto(proto)
        request.proto_file.append(proto)
        if not fd.name.startswith("google/protobuf/"):
            request.file_to_generate.append(fd.name)
    response = plugin_pb2.CodeGeneratorResponse()
    descriptors = mypy_protobuf.Descriptors(request)
    mypy_protobuf.generate_mypy_stubs(descriptors, response, True, False, False, False, False)
    grpc_type = mypy_protobuf.GRPCType.BOTH  # the `_pb2_grpc` modules beside them
    mypy_protobuf.generate_mypy_grpc_stubs(  # concrete servicers: a server implements what it serves
        descriptors, response, True, False, False, False, True, grpc_type
    )
    if output.exists():
        shutil.rmtree(output)
    for generated in response.file:
        path = output / generated.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(generated.content)
    return len(response.file)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("output", type=Path)
    args = parser.parse_args(argv)
    count = write_stubs(args.output, imported_pb2_modules())
    print(f"protobuf stubs: {count} files in {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
