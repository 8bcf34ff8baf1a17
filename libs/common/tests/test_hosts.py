"""Host rules: what may reach a Sidecar, authority splitting, namespace domains."""

from __future__ import annotations

import ipaddress
import re

import pytest
from hypothesis import example, given
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


_OLD_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def _old_is_valid_host(host: str) -> bool:
    """`is_valid_host` as it was, one regex match per label: the reference of the single pattern
    (with `fullmatch`: the old `match(r"^...$")` let a trailing newline through, a bug)."""
    if not host or len(host) > hosts.MAX_HOST_LENGTH or not host.isascii():
        return False
    labels = host.split(".")
    if not all(_OLD_LABEL.fullmatch(label) for label in labels):
        return False
    return not labels[-1].isdigit()


_CHARS = "ab0189-.\nA_ *:\u00fc\u0663"
"""Label characters, separators and near-misses (a newline, upper case, non-ASCII letter and
digit)."""
_LABELS = st.one_of(
    st.text(alphabet=_CHARS, max_size=5),
    st.text(alphabet="a0-", min_size=60, max_size=66),
    st.from_regex(r"[a-z0-9][a-z0-9-]{0,61}[a-z0-9]\n?", fullmatch=True),
    st.from_regex(r"[0-9]{1,4}\n?", fullmatch=True),
)


@example("a\n.b")
@example("a.1\n")
@example("a.1")
@example("a" * 63 + "\n.b")
@example(".".join(["a" * 63] * 4))
@example(".".join(["a" * 63] * 3 + ["a" * 61]))
@given(
    st.one_of(st.text(alphabet=_CHARS, max_size=300), st.lists(_LABELS, max_size=8).map(".".join))
)
def test_is_valid_host_is_the_per_label_definition(text: str) -> None:
    assert hosts.is_valid_host(text) is _old_is_valid_host(text)


@pytest.mark.parametrize(
    "text", ["a\n", "a\n.b", "a.b\n", "details.default.svc.cluster.local\n", "\na"]
)
def test_a_newline_is_never_part_of_a_host(text: str) -> None:
    assert not hosts.is_valid_host(text)
    assert not hosts.is_valid_domain(text)
    label = next(part for part in text.split(".") if "\n" in part)
    assert not hosts.is_valid_namespace(label)


def _old_is_ip_literal(value: str) -> bool:
    try:
        ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        return False
    return True


_OCTETS = st.one_of(
    st.integers(0, 300).map(str),
    st.text(alphabet="0123456789", max_size=4),
    st.sampled_from(["00", "01", "007", "255", "256", "\u0663", "+1", " 1", "1\n"]),
)


@example("10.96.0.1")
@example("[10.96.0.1]")
@example("01.2.3.4")
@example("1.2.3.4\n")
@example("::ffff:1.2.3.4")
@example("[::1]")
@given(
    st.one_of(
        st.lists(_OCTETS, min_size=3, max_size=5).map(".".join),
        st.text(alphabet="0123456789.:[]abf\n", max_size=20),
    )
)
def test_is_ip_literal_is_ipaddress(text: str) -> None:
    assert hosts.is_ip_literal(text) is _old_is_ip_literal(text)


@pytest.mark.parametrize(
    "text", ["1", "80", "65535", "0", "65536", "", "x", "\u00b2", "\u0663", "-1"]
)
def test_port_is_as_before(text: str) -> None:
    def old(text: str) -> int:
        if not text.isdigit() or not 0 < int(text) < 65536:
            raise ValueError(f"invalid port: {text!r}")
        return int(text)

    try:
        expected: object = old(text)
    except ValueError:
        expected = ValueError
    try:
        got: object = hosts._port(text)
    except ValueError:
        got = ValueError
    assert got == expected


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("productpage", True),
        ("app-web.workload.identity", True),
        ("123", True),  # an object name may end in digits, a host may not
        ("a" * 253, False),  # one label of 253: too long for a label
        (".".join(["a" * 63] * 3) + "." + "a" * 61, True),  # 253 characters
        ("", False),
        ("Productpage", False),
        ("../etc", False),
        ("a/b", False),
        ("a..b", False),
        ("-a", False),
        ("a b", False),
    ],
)
def test_object_names(name: str, ok: bool) -> None:
    assert hosts.is_object_name(name) is ok
