"""ALS messages -> records -> outcomes (no network): parsing and per-stream state.

- nil-safe parsing: entries without common properties, caller address, request or authority
  are rejected one by one; their valid neighbours still give edges;
- flags, response code, start time, the `slime-source-ns` and content-type headers are read;
- undecodable bytes are one `malformed_message` rejection; a message that decodes to nothing
  (garbage that happens to be valid protobuf) is an `empty_message` rejection; a malformed
  message leaves the stream's identity as it was, even one whose identifier was fine;
- the identifier is read from the first message and kept for the stream: Istio node metadata
  (NAMESPACE, WORKLOAD_NAME, LABELS), and the global-sidecar's marker or namespace;
- TCP entries;
- an entry that raises inside the domain is counted as `internal_error`, not fatal;
- the hot path: a message's entries are grouped by key (repeats counted, the direction read for
  workload streams only, one by one when grouping raises), and a key derives the same edges or
  rejection as the full record of its entry (hypothesis).
"""

from __future__ import annotations

import pytest
from envoy.data.accesslog.v3 import accesslog_pb2
from hypothesis import given, settings
from hypothesis import strategies as st
from lazyload_accesslog_ingest import edges, ingesting, parsing
from lazyload_accesslog_ingest.records import AccessRecord, Rejection, StreamIdentity
from lazyload_common import events, hosts
from lazyload_testing import ingest as t

M = t.SampleMesh


@pytest.fixture(params=["compiled", "protobuf"])
def ingestor(request: pytest.FixtureRequest) -> ingesting.Ingestor:
    """An ingestor on each decoder (every test of it runs on both)."""
    return ingesting.Ingestor(
        t.sample_index(),
        reporter="r",
        clock=lambda: 1_800_000_000.0,
        decoder=request.param,
    )


def test_http_record_fields() -> None:
    entry = t.http_entry(
        "Details:9080",
        flags=["UH", "URX"],
        code=503,
        headers={"slime-source-ns": "Default", "content-type": "application/grpc+proto"},
        local="10.96.0.10",
        local_port=9080,
        start=1_700_000_000.5,
    )
    rec = parsing.http_record(entry)
    assert not isinstance(rec, Rejection)
    assert rec.protocol == "grpc"
    assert rec.caller_ip == "10.1.0.1"
    assert rec.authority == "Details:9080"
    assert rec.response_flags == {"UH", "URX"}
    assert rec.response_code == 503
    assert rec.source_namespace_header == "default"
    assert (rec.original_ip, rec.original_port) == ("10.96.0.10", 9080)
    assert rec.start_time == pytest.approx(1_700_000_000.5)
    assert rec.direction == "outbound"


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        (t.http_entry(with_common=False), Rejection.MISSING_CALLER),
        (t.http_entry(caller=None), Rejection.MISSING_CALLER),
        (t.http_entry(caller=""), Rejection.MISSING_CALLER),
        (t.http_entry(authority=None), Rejection.MISSING_AUTHORITY),
        (t.http_entry(authority=""), Rejection.MISSING_AUTHORITY),
    ],
)
def test_http_record_missing_fields(
    entry: accesslog_pb2.HTTPAccessLogEntry, reason: Rejection
) -> None:
    assert parsing.http_record(entry) is reason


def test_http_record_optional_fields_absent() -> None:
    rec = parsing.http_record(t.http_entry(code=None, start=None, upstream_cluster=""))
    assert not isinstance(rec, Rejection)
    assert rec.response_code is None and rec.start_time is None
    assert rec.response_flags == frozenset() and rec.direction == ""
    assert rec.protocol == "http" and rec.source_namespace_header == ""


def test_tcp_record() -> None:
    rec = parsing.tcp_record(t.tcp_entry("10.96.0.11", 3306, flags=["UF"]))
    assert not isinstance(rec, Rejection)
    assert (rec.protocol, rec.original_ip, rec.original_port) == ("tcp", "10.96.0.11", 3306)
    assert rec.response_flags == {"UF"}
    assert parsing.tcp_record(t.tcp_entry(None)) is Rejection.TCP_UNKNOWN_DESTINATION
    assert parsing.tcp_record(t.tcp_entry(caller=None)) is Rejection.MISSING_CALLER


def test_one_bad_entry_keeps_its_neighbours(ingestor: ingesting.Ingestor) -> None:
    msg = t.message(
        t.http_entry("details:9080"),
        t.http_entry(with_common=False),
        t.http_entry(authority=None),
        t.http_entry("bad_host!"),
        t.http_entry("10.1.2.3"),
        t.http_entry("x", flags=["NR"], code=404),
        t.http_entry("details:9080", caller="10.9.9.9"),
        t.http_entry("ratings.shop:9080"),
        ident=t.identifier(),
    )
    outcome = ingestor.ingest(msg.SerializeToString(), ingesting.StreamState())
    assert outcome.entries == {"http": 8}
    assert [e.destination_host for e in outcome.edges] == [
        "details.default.svc.cluster.local",
        "ratings.shop.svc.cluster.local",
    ]
    assert outcome.rejections == {
        Rejection.MISSING_CALLER: 1,
        Rejection.MISSING_AUTHORITY: 1,
        Rejection.INVALID_HOST: 1,
        Rejection.IP_AUTHORITY: 1,
        Rejection.UNROUTED: 1,
        Rejection.UNKNOWN_CALLER: 1,
    }
    assert all(e.reporter == "r" and e.observed_at == 1_800_000_000.0 for e in outcome.edges)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xff\xff\xff", Rejection.MALFORMED_MESSAGE),
        (b"\x12\x05\x0a\x03abc", Rejection.MALFORMED_MESSAGE),  # entry list holding garbage
        (b"", Rejection.EMPTY_MESSAGE),
        (b"\xa0\x06\x01", Rejection.EMPTY_MESSAGE),  # an unknown field only
    ],
)
def test_undecodable_messages(ingestor: ingesting.Ingestor, raw: bytes, reason: Rejection) -> None:
    stream = ingesting.StreamState()
    outcome = ingestor.ingest(raw, stream)
    assert outcome.rejections == {reason: 1}
    assert not outcome.edges
    # the stream goes on
    good = ingestor.ingest(t.message(t.http_entry()).SerializeToString(), stream)
    assert len(good.edges) == 1
    assert stream.messages == 2


def test_a_decoder_bug_costs_one_message_not_the_stream(
    ingestor: ingesting.Ingestor, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = ingestor.decode

    def buggy(raw: bytes) -> parsing.Decoded:
        if b"boom" in raw:
            raise RuntimeError("bug")
        return real(raw)

    monkeypatch.setattr(ingestor, "decode", buggy)
    stream = ingesting.StreamState()
    bad = ingestor.ingest(t.message(t.http_entry("boom")).SerializeToString(), stream)
    assert bad.rejections == {Rejection.INTERNAL: 1} and stream.malformed == 0
    good = ingestor.ingest(t.message(t.http_entry()).SerializeToString(), stream)
    assert len(good.edges) == 1


def test_a_malformed_message_leaves_the_stream_identity_alone(
    ingestor: ingesting.Ingestor,
) -> None:
    stream = ingesting.StreamState()
    ident = t.identifier("sidecar~web", metadata={"NAMESPACE": "default", "WORKLOAD_NAME": "web"})
    ingestor.ingest(t.message(ident=ident).SerializeToString(), stream)
    before = stream.identity
    other = t.identifier("sidecar~db", metadata={"NAMESPACE": "data", "WORKLOAD_NAME": "db"})
    broken = t.message(t.http_entry(), ident=other).SerializeToString()[:-3]  # cut in an entry
    outcome = ingestor.ingest(broken, stream)
    assert outcome.rejections == {Rejection.MALFORMED_MESSAGE: 1}
    assert stream.identity is before and stream.malformed == 1


def test_identity_is_kept_for_the_stream(ingestor: ingesting.Ingestor) -> None:
    stream = ingesting.StreamState()
    ident = t.identifier(
        "sidecar~10.1.0.7~web-1.default~default.svc.cluster.local",
        log_name="sidecar-als",
        metadata={
            "NAMESPACE": "default",
            "WORKLOAD_NAME": "web",
            "LABELS": {"tier": "web", "version": "v1"},
        },
    )
    first = ingestor.ingest(t.message(ident=ident).SerializeToString(), stream)
    assert not first.rejections and not first.entries  # identifier only: fine
    assert stream.identity == StreamIdentity(
        log_name="sidecar-als",
        node_id="sidecar~10.1.0.7~web-1.default~default.svc.cluster.local",
        namespace="default",
        workload="web",
        labels={"tier": "web", "version": "v1"},
    )
    later = ingestor.ingest(t.message(t.http_entry(caller="10.9.9.9")).SerializeToString(), stream)
    assert [(e.source_namespace, e.source_name) for e in later.edges] == [("default", "frontend")]
    other = ingestor.ingest(
        t.message(t.http_entry(caller="10.9.9.9")).SerializeToString(), ingesting.StreamState()
    )
    assert other.rejections == {Rejection.UNKNOWN_CALLER: 1}


@pytest.mark.parametrize(
    "metadata",
    [
        {"NAMESPACE": "istio-system/x", "WORKLOAD_NAME": "web"},
        {"NAMESPACE": "Default", "WORKLOAD_NAME": "web"},
        {"NAMESPACE": "default", "WORKLOAD_NAME": "../../web"},
        {"NAMESPACE": "default", "WORKLOAD_NAME": "*"},
    ],
)
def test_a_caller_that_kubernetes_could_not_name_is_never_published(
    ingestor: ingesting.Ingestor, metadata: dict[str, str]
) -> None:
    """A sidecar's node metadata is the sender's word: a namespace or workload name no
    Kubernetes object can have never reaches a subject, a fence or an API path (#16)."""
    stream = ingesting.StreamState()
    msg = t.message(t.http_entry("www.example.com"), ident=t.identifier(metadata=metadata))
    outcome = ingestor.ingest(msg.SerializeToString(), stream)
    assert outcome.edges == []
    assert outcome.rejections == {Rejection.INVALID_CALLER: 1}


@pytest.mark.parametrize(
    "metadata",
    [
        {"NAMESPACE": "mesh-operator", "WORKLOAD_NAME": "global-sidecar"},
        {"NAMESPACE": "elsewhere", "SLIME_APP": "LAZYLOAD_GLOBAL_SIDECAR"},
    ],
)
def test_global_sidecar_is_never_the_caller(
    ingestor: ingesting.Ingestor, metadata: dict[str, str]
) -> None:
    stream = ingesting.StreamState()
    msg = t.message(t.http_entry(), ident=t.identifier(metadata=metadata))
    outcome = ingestor.ingest(msg.SerializeToString(), stream)
    assert stream.identity is not None and stream.identity.global_sidecar
    assert [(e.source_namespace, e.source_name) for e in outcome.edges] == [
        ("default", "productpage")
    ]


def test_odd_metadata_types_are_ignored(ingestor: ingesting.Ingestor) -> None:
    stream = ingesting.StreamState()
    ident = t.identifier(metadata={"NAMESPACE": 3, "LABELS": "not-a-map", "WORKLOAD_NAME": ["x"]})
    ingestor.ingest(t.message(t.http_entry(), ident=ident).SerializeToString(), stream)
    assert stream.identity is not None
    assert (stream.identity.namespace, stream.identity.labels, stream.identity.workload) == (
        "",
        {},
        "",
    )


def test_tcp_message(ingestor: ingesting.Ingestor) -> None:
    msg = t.message(t.tcp_entry(M.RATINGS_CLUSTER_IP, 9080), t.tcp_entry("10.99.0.1", 1))
    outcome = ingestor.ingest(msg.SerializeToString(), ingesting.StreamState())
    assert outcome.entries == {"tcp": 2}
    assert [e.destination_host for e in outcome.edges] == ["ratings.shop.svc.cluster.local"]
    assert outcome.rejections == {Rejection.TCP_UNKNOWN_DESTINATION: 1}


def test_a_raising_entry_is_counted_not_fatal(
    ingestor: ingesting.Ingestor, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = edges.prototypes

    def flaky(record, *args, **kwargs):
        if record.authority == "boom":
            raise RuntimeError("bug")
        return real(record, *args, **kwargs)

    monkeypatch.setattr(edges, "prototypes", flaky)
    msg = t.message(t.http_entry("boom"), t.http_entry("details"))
    outcome = ingestor.ingest(msg.SerializeToString(), ingesting.StreamState())
    assert outcome.rejections == {Rejection.INTERNAL: 1}
    assert len(outcome.edges) == 1


# --- the hot path: entries grouped by key, derived from the key ---------------------------------

_IPS = st.sampled_from([M.PRODUCTPAGE_IP, M.MULTI_IP, "10.9.9.9", "", "not-an-ip"])
_AUTHORITIES = st.sampled_from(
    [
        "details:9080",
        "Details.Default",
        "ratings.shop",
        "10.96.0.10:80",
        "www.example.com.",
        "",
        "a:b",
    ]
)
_HEADERS = st.dictionaries(
    st.sampled_from(["content-type", "slime-source-ns", "x-request-id"]),
    st.sampled_from(["application/grpc+proto", "text/plain", " Shop ", "default", ""]),
    max_size=3,
)
_FLAGS = st.lists(st.sampled_from(["NR", "NC", "DF", "UH", "UF", "DC"]), max_size=2)
_CLUSTERS = st.sampled_from(
    ["outbound|9080||details.default.svc.cluster.local", "inbound|80||", ""]
)
_WORKLOAD = StreamIdentity(namespace="default", workload="productpage-v1", labels={"app": "x"})


def _derived(
    record: AccessRecord | Rejection, identity: StreamIdentity | None
) -> list[events.DependencyObserved] | Rejection:
    if isinstance(record, Rejection):
        return record
    result = edges.derive(record, identity, t.sample_index(), edges.Options(), now=1.0)
    if isinstance(result, Rejection):
        return result
    return [e.model_copy(update={"first_seen": 0.0}) for e in result]


@settings(max_examples=200, deadline=None)
@given(
    caller=_IPS,
    authority=_AUTHORITIES,
    headers=_HEADERS,
    flags=_FLAGS,
    cluster=_CLUSTERS,
    common=st.booleans(),
    identity=st.sampled_from([None, _WORKLOAD]),
)
def test_a_key_derives_what_its_entry_derives(
    caller: str,
    authority: str,
    headers: dict[str, str],
    flags: list[str],
    cluster: str,
    common: bool,
    identity: StreamIdentity | None,
) -> None:
    """A cache miss derives from the entry's key: the same edges (or rejection) as from the full
    record of the entry, with or without the direction in the key."""
    entry = t.http_entry(
        authority or None,
        caller=caller or None,
        headers=headers,
        flags=flags,
        upstream_cluster=cluster,
        with_common=common,
    )
    direction = identity is not None
    key = parsing.http_key(entry, direction=direction)
    assert _derived(parsing.http_record_of(key), identity) == _derived(
        parsing.http_record(entry), identity
    )


@settings(max_examples=100, deadline=None)
@given(
    caller=_IPS,
    original=st.sampled_from(["10.96.0.10", "10.96.9.9", "", None]),
    port=st.sampled_from([0, 80, 3306]),
    flags=_FLAGS,
    cluster=_CLUSTERS,
    identity=st.sampled_from([None, _WORKLOAD]),
)
def test_a_tcp_key_derives_what_its_entry_derives(
    caller: str,
    original: str | None,
    port: int,
    flags: list[str],
    cluster: str,
    identity: StreamIdentity | None,
) -> None:
    entry = t.tcp_entry(
        original, port, caller=caller or None, flags=flags, upstream_cluster=cluster
    )
    key = parsing.tcp_key(entry, direction=identity is not None)
    assert _derived(parsing.tcp_record_of(key), identity) == _derived(
        parsing.tcp_record(entry), identity
    )


def test_entries_are_grouped_by_key_in_order() -> None:
    entries = [
        t.http_entry("details", headers={"x-request-id": "1"}),
        t.http_entry("ratings.shop"),
        t.http_entry("details", headers={"x-request-id": "2"}, start=5.0),
        t.http_entry("details"),
    ]
    firsts, repeats = parsing.http_keys(entries, direction=False)
    assert list(firsts.values()) == entries[:2]
    assert list(repeats.values()) == [3]
    assert repeats.keys() <= firsts.keys()


def test_the_direction_is_read_for_workload_streams_only() -> None:
    inbound = t.http_entry(upstream_cluster="inbound|9080||")
    outbound = t.http_entry()
    assert parsing.http_key(inbound, direction=False) == parsing.http_key(outbound, direction=False)
    assert parsing.http_key(inbound) != parsing.http_key(outbound)


def test_impossible_start_times_become_the_time_of_observation(
    ingestor: ingesting.Ingestor,
) -> None:
    now = 1_800_000_000.0  # the fixture's clock
    msg = t.message(
        t.http_entry("a.example.com", start=-1.0),
        t.http_entry("b.example.com", start=-62_167_219_200.0),  # year 0
        t.http_entry("c.example.com", start=now + edges.MAX_CLOCK_SKEW + 1),
        t.http_entry("d.example.com", start=now + edges.MAX_CLOCK_SKEW),
        t.http_entry("e.example.com", start=None),
    )
    outcome = ingestor.ingest(msg.SerializeToString(), ingesting.StreamState())
    first_seen = {o.event.destination_host: o.event.first_seen for o in outcome.observed}
    assert first_seen == {
        "a.example.com": now,
        "b.example.com": now,
        "c.example.com": now,
        "d.example.com": now + edges.MAX_CLOCK_SKEW,
        "e.example.com": now,
    }
    assert outcome.clamped == 3


def test_repeated_entries_are_all_counted(ingestor: ingesting.Ingestor) -> None:
    msg = t.message(
        *[t.http_entry("details")] * 3, *[t.http_entry("nowhere.example.com", flags=["NR"])] * 2
    )
    outcome = ingestor.ingest(msg.SerializeToString(), ingesting.StreamState())
    assert outcome.entries == {"http": 5}
    assert outcome.derived == 3
    assert outcome.rejections == {Rejection.UNROUTED: 2}
    assert len(outcome.sightings) == 1


def test_entries_that_cannot_be_keyed_together_are_keyed_one_by_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The protobuf decoder's guard (the compiled one reads a message whole or rejects it)."""
    ingestor = ingesting.Ingestor(t.sample_index(), decoder="protobuf")
    real = parsing.http_keys

    def flaky(entries, *, direction):
        if any(e.request.authority == "boom" for e in entries):
            raise RuntimeError("bug")
        return real(entries, direction=direction)

    monkeypatch.setattr(parsing, "http_keys", flaky)
    msg = t.message(t.http_entry("boom"), t.http_entry("details"), t.http_entry("details"))
    outcome = ingestor.ingest(msg.SerializeToString(), ingesting.StreamState())
    assert outcome.entries == {"http": 3}
    assert outcome.rejections == {Rejection.INTERNAL: 1}
    assert outcome.derived == 2
    assert [e.destination_host for e in outcome.edges] == ["details.default.svc.cluster.local"]


@pytest.mark.parametrize(
    ("host", "literal"),
    [
        ("details.default", False),
        ("svc-1.ns-1", False),
        ("10.96.0.10", True),
        ("1.2.3", False),
        ("::1", True),
        ("fe80::1%eth0", True),
        ("[::1]", True),
        ("1e100.net", False),
    ],
)
def test_ip_literal_shortcut_agrees_with_hosts(host: str, literal: bool) -> None:
    assert edges._is_ip_literal(host) is literal
    assert hosts.is_ip_literal(host) is literal


def test_the_derived_entry_caches_are_bounded() -> None:
    """The caches of derived entries were emptied only when the directory changed: with a stable
    mesh every distinct entry key stayed (the soak saw accesslog-ingest grow 0.77 MB/min under an
    ever-growing edge space). Past `max_cached` keys they start over, for shared and workload
    streams alike."""
    ingestor = ingesting.Ingestor(
        t.sample_index(), reporter="r", clock=lambda: 1_800_000_000.0, max_cached=50
    )
    shared, workload = ingesting.StreamState(), ingesting.StreamState()
    ident = t.identifier(
        "sidecar~10.1.0.1~productpage.default~default.svc.cluster.local",
        metadata={"NAMESPACE": "default", "WORKLOAD_NAME": "productpage"},
    )
    ingestor.ingest(t.message(ident=ident).SerializeToString(), workload)
    for i in range(200):
        raw = t.message(t.http_entry(f"h{i}.example.com:80")).SerializeToString()
        ingestor.ingest(raw, shared)
        ingestor.ingest(raw, workload)
        assert len(ingestor._shared) <= 51 and len(workload.cache) <= 51, i
        assert len(ingestor._memo) <= 3 * 51, i
