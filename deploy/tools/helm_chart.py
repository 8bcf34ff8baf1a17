"""Render or lint the chart with the Helm SDK; runs in `.venv-helm` (helm-python-sdk,
kubernetes-validate), never in the main `.venv`.

    .venv-helm/bin/python deploy/tools/helm_chart.py render CHART [--values FILE.json]
        [--name N] [--namespace NS] [--upgrade]  -> JSON {"manifests": [...], "crds": [...], "notes": "..."}
    .venv-helm/bin/python deploy/tools/helm_chart.py lint CHART [--values FILE.json]
        -> JSON lint report; exit 1 when it has errors
    .venv-helm/bin/python deploy/tools/helm_chart.py validate FILE.json
        -> kubernetes-validate (strict) of every object in FILE.json (a JSON list);
           JSON {"passed": [...], "failed": [...], "unknown": [...]}; exit 1 on a failure
    .venv-helm/bin/python deploy/tools/helm_chart.py promql FILE.json
        -> PromQL parse (promql-parser) of every expression in FILE.json (a JSON list);
           JSON {"errors": {expr: message}}; exit 1 when one does not parse
    .venv-helm/bin/python deploy/tools/helm_chart.py schema CHART --values FILE.json
        -> values.schema.json check; exit 1 (message on stderr) when the values are rejected
"""

# helm_python, promql_parser and kubernetes_validate are installed in .venv-helm only (make setup):
# pyright: reportMissingImports=false

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml


def _values(path: str | None) -> dict | None:
    return json.loads(Path(path).read_text()) if path else None


def render(args: argparse.Namespace) -> int:
    import helm_python as helm

    chart = helm.Chart.load(args.chart)
    rendered = chart.render(
        _values(args.values),
        name=args.name,
        namespace=args.namespace,
        is_install=not args.upgrade,
        is_upgrade=args.upgrade,
    )
    manifests, notes = [], ""
    for source, text in sorted(rendered.items()):
        if source.endswith("NOTES.txt"):
            notes = text
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                manifests.append({"source": source, "object": doc})
    crds = [yaml.safe_load(c["data"]) for c in chart.crds]
    json.dump({"manifests": manifests, "crds": crds, "notes": notes}, sys.stdout)
    return 0


def lint(args: argparse.Namespace) -> int:
    import helm_python as helm

    report = helm.lint(args.chart, _values(args.values), strict=False)
    json.dump(report, sys.stdout)
    return 1 if report.get("errors") else 0


def schema(args: argparse.Namespace) -> int:
    import helm_python as helm

    try:
        helm.Chart.load(args.chart).validate_schema(_values(args.values))
    except helm.HelmError as error:
        print(str(error), file=sys.stderr)
        return 1
    return 0


def promql(args: argparse.Namespace) -> int:
    import promql_parser

    errors = {}
    for expr in json.loads(Path(args.file).read_text()):
        try:
            promql_parser.parse(expr)
        except ValueError as error:
            errors[expr] = str(error)
    json.dump({"errors": errors}, sys.stdout)
    return 1 if errors else 0


def validate(args: argparse.Namespace) -> int:
    import kubernetes_validate as kv

    out: dict[str, list] = {"passed": [], "failed": [], "unknown": []}
    for obj in json.loads(Path(args.file).read_text()):
        ident = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        try:
            kv.validate(obj, kv.latest_version(), strict=True)
            out["passed"].append(ident)
        except kv.SchemaNotFoundError:
            out["unknown"].append(ident)
        except kv.ValidationError as error:
            out["failed"].append(f"{ident}: {error.path}: {error.message}")
    json.dump(out, sys.stdout)
    return 1 if out["failed"] else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func in (("render", render), ("lint", lint), ("schema", schema)):
        p = sub.add_parser(name)
        p.add_argument("chart")
        p.add_argument("--values")
        p.add_argument("--name", default="lazyload")
        p.add_argument("--namespace", default="mesh-operator")
        p.add_argument("--upgrade", action="store_true", help="render as `helm upgrade` would")
        p.set_defaults(func=func)
    for name, func in (("validate", validate), ("promql", promql)):
        p = sub.add_parser(name)
        p.add_argument("file")
        p.set_defaults(func=func)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
