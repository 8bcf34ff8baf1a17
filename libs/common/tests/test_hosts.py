"""Host rules: what may reach a Sidecar, authority splitting, namespace domains."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lazyload_common import hosts


@pytest.mark.parametrize(
    "host",
    [
        "details.default.svc.cluster.local",
        "a",
        "www.example.com",
        "x-1.y-2",
        "a" * 63 + ".b",
    ],
)
def test_valid_hosts(host: str) -> None:
    assert hosts.is_valid_host(host)


@pytest.mark.parametrize(
    "host",
    [
        "",
        "UPPER.case",
        "*.example.com",
        "a..b",
        "-a.b",
        "a-.b",
        "a_b.c",
        "a b",
        "a/b",
        "a:80",
        "trailing.",
        "a" * 64,
        ".".join(["a" * 50] * 6),
        "ümlaut.de",
        "tab\t.x",
        "10.0.0.1",
        "a.123",
    ],
)
def test_invalid_hosts(host: str) -> None:
    assert not hosts.is_valid_host(host)


@pytest.mark.parametrize(
    "domain,ok",
    [
        ("default/*", True),
        ("a.b.svc.cluster.local", True),
        ("*/*", False),
        ("Default/*", False),
        ("ns/x", False),
        ("ns/", False),
    ],
)
def test_domains(domain: str, ok: bool) -> None:
    assert hosts.is_valid_domain(domain) is ok


@pytest.mark.parametrize(
    "authority,expected",
    [
        ("details:9080", ("details", 9080)),
        ("details", ("details", None)),
        ("[::1]:80", ("::1", 80)),
        ("[::1]", ("::1", None)),
        ("::1", ("::1", None)),
        ("10.0.0.1:8080", ("10.0.0.1", 8080)),
    ],
)
def test_split_host_port(authority: str, expected: tuple[str, int | None]) -> None:
    assert hosts.split_host_port(authority) == expected


@pytest.mark.parametrize("authority", ["a:", "a:x", "a:0", "a:65536", "[::1", "[::1]x"])
def test_split_host_port_rejects_bad_ports(authority: str) -> None:
    with pytest.raises(ValueError):
        hosts.split_host_port(authority)


@given(st.text(max_size=300))
def test_a_valid_host_is_always_safe_for_a_sidecar(text: str) -> None:
    if hosts.is_valid_host(text):
        assert text == text.lower().strip()
        assert not set(text) & set("*/: \t\n\r")
        assert len(text) <= 253
