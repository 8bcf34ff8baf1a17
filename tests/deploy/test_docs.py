"""README.md's configuration table and the generated files cannot drift from the code."""

from __future__ import annotations

from deploy_support import CHART, ROOT, tool


def test_config_table_is_generated_from_the_settings_models() -> None:
    config_table = tool("config_table")
    committed = config_table.current((ROOT / "README.md").read_text())
    assert committed == config_table.table(), "run deploy/tools/config_table.py --write"


def test_values_schema_is_generated() -> None:
    values_schema = tool("values_schema")
    assert (CHART / "values.schema.json").read_text() == values_schema.text(), (
        "run deploy/tools/values_schema.py"
    )


def test_every_setting_appears_in_the_table() -> None:
    catalog = tool("settings_catalog")
    table = tool("config_table").table()
    for service in catalog.SERVICES:
        for name in catalog.env_names(service):
            assert f"`{name}`" in table


def test_chart_crd_is_a_copy_of_deploy_crds() -> None:
    assert (CHART / "crds" / "servicefence.yaml").read_bytes() == (
        ROOT / "deploy" / "crds" / "servicefence.yaml"
    ).read_bytes(), "copy deploy/crds/servicefence.yaml to deploy/helm/lazyload/crds/"
