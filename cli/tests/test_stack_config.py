"""The `lazyload` command's pieces that need no running stack: free ports, port resolution, where
binaries and CRDs are found, and the demo's expected dependencies."""

from __future__ import annotations

import socket
from pathlib import Path

from lazyload_cli import bookinfo, ports, stack
from lazyload_cli.main import app
from typer.testing import CliRunner


def test_free_ports_are_distinct_and_bindable() -> None:
    picked = ports.free_ports(8)
    assert len(set(picked)) == 8
    for port in picked:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_resolve_ports_keeps_given_ports_and_fills_the_rest(tmp_path: Path) -> None:
    config = stack.StackConfig(
        state_dir=tmp_path, nats_port=4333, admin_ports={"global-pilot": 9999}
    )
    config.resolve_ports()
    assert config.nats_port == 4333 and config.admin_ports["global-pilot"] == 9999
    chosen = [
        config.kube_port,
        config.als_port,
        config.xds_port,
        config.listener_port,
        config.envoy_admin_port,
        *config.admin_ports.values(),
    ]
    assert all(chosen) and len(set(chosen)) == len(chosen)
    assert set(config.admin_ports) == set(stack.SERVICES)


def test_repo_root_holds_the_crds() -> None:
    root = stack.repo_root()
    assert (root / "deploy" / "crds" / "servicefence.yaml").is_file()


def test_binaries_come_from_this_environment() -> None:
    for name in (
        "nats-server",
        "lazyload-kube-emulator",
        *(f"lazyload-{s}" for s in stack.SERVICES),
    ):
        assert Path(stack.bin_path(name)).exists(), name
    assert Path(stack.envoy_path()).exists()


def test_expected_dependencies_follow_the_call_graph() -> None:
    expected = bookinfo.expected_dependencies("example.org")
    assert expected == {
        "productpage": {"details.default.svc.example.org", "reviews.default.svc.example.org"},
        "reviews": {"ratings.default.svc.example.org"},
    }
    assert len(set(bookinfo.POD_IPS.values())) == len(bookinfo.CALLS)


def test_cli_help_lists_the_commands() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "demo" in result.output and "up" in result.output
