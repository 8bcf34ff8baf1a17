"""Every metric docs/metrics.md names is one a service exports (defined in a service's or the
common library's source); the chart's Grafana dashboard and PrometheusRule use only those, in
expressions that parse as PromQL."""

from __future__ import annotations

import json
import re
from pathlib import Path

from deploy_support import CHART, helm_tool, values_file

ROOT = Path(__file__).resolve().parents[2]
SUFFIXES = ("_bucket", "_count", "_sum")


def _defined() -> set[str]:
    names: set[str] = set()
    for source in [*ROOT.glob("services/*/src/**/*.py"), *ROOT.glob("libs/common/src/**/*.py")]:
        names.update(re.findall(r'"(lazyload_[a-z_]+)"', source.read_text()))
    return names


def test_every_documented_metric_is_exported() -> None:
    named = set(re.findall(r"\blazyload_[a-z_]+", (ROOT / "docs/metrics.md").read_text()))
    defined = _defined()
    assert len(named) >= 10
    unknown = set()
    for name in named:
        base = next((name[: -len(s)] for s in SUFFIXES if name.endswith(s)), name)
        if name not in defined and base not in defined:
            unknown.add(name)
    assert not unknown, f"docs/metrics.md names metrics no service exports: {sorted(unknown)}"


# ---- the chart's dashboard and alerts use exactly those metrics ---------------------------


def _metric_names(text: str) -> set[str]:
    names = set()
    for name in re.findall(r"\blazyload_[a-z_]+", text):
        names.add(next((name[: -len(s)] for s in SUFFIXES if name.endswith(s)), name))
    return names


def _chart_expressions(tmp_path: Path) -> dict[str, list[str]]:
    """PromQL of the chart's PrometheusRule (rendered with monitoring on) and of its Grafana
    dashboard (Grafana's variables replaced by what they stand for)."""
    values = {"monitoring": {"prometheusRule": {"enabled": True}}}
    result = helm_tool("render", str(CHART), "--values", values_file(tmp_path, values))
    objs = [m["object"] for m in json.loads(result.stdout)["manifests"]]
    rule = next(o for o in objs if o["kind"] == "PrometheusRule")
    alerts = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    dashboard = json.loads((CHART / "dashboards" / "lazyload.json").read_text())
    panels = [
        t["expr"].replace("$__rate_interval", "5m").replace("$namespace", ".*")
        for p in dashboard["panels"]
        for t in p["targets"]
    ]
    return {"PrometheusRule": alerts, "dashboard": panels}


def test_dashboard_and_alerts_use_documented_exported_metrics(tmp_path: Path) -> None:
    documented = _metric_names((ROOT / "docs/metrics.md").read_text())
    defined = _defined()
    for where, exprs in _chart_expressions(tmp_path).items():
        used = _metric_names("\n".join(exprs))
        assert len(used) >= 5, where
        assert used <= defined, f"{where} uses metrics no service exports: {used - defined}"
        assert used <= documented, (
            f"{where} uses metrics docs/metrics.md omits: {used - documented}"
        )


def test_dashboard_and_alert_expressions_parse_as_promql(tmp_path: Path) -> None:
    exprs = [e for group in _chart_expressions(tmp_path).values() for e in group]
    path = tmp_path / "exprs.json"
    path.write_text(json.dumps(exprs))
    report = json.loads(helm_tool("promql", str(path), check=False).stdout)
    assert report["errors"] == {}
    path.write_text(json.dumps(["sum(rate(lazyload_ingest_streams[5m])"]))  # the parser bites
    assert json.loads(helm_tool("promql", str(path), check=False).stdout)["errors"]
