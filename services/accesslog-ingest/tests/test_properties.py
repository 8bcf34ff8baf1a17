"""Property tests (hypothesis) of ServiceEntry matching and of the `slime-source-ns` header.

- ServiceEntries with random exact and `*.suffix` hosts, random hosts looked up: the index agrees
  with a plain reference (an exact host beats any wildcard, the longest matching suffix wins, a
  wildcard never matches its own suffix, ties go to the first ServiceEntry by namespace/name);
- whatever the authority, an edge derived through the ingest path carries a valid host, and a
  ServiceEntry namespace only for a host that no Service holds;
- random `slime-source-ns` values: the header is never the caller of a known caller's edge, and an
  unresolved edge's namespace is the normalised header when it is a valid namespace, else
  `unknown`; the same holds through the cached hot path (`Ingestor.ingest`).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from lazyload_accesslog_ingest import edges, indexing, ingesting
from lazyload_accesslog_ingest.records import AccessRecord, Rejection, ServiceRef
from lazyload_common import hosts
from lazyload_testing import ingest as t

M = t.SampleMesh
LABELS = st.sampled_from(["a", "b", "api", "eu", "x-1", "example", "com", "svc"])
HOSTS = st.lists(LABELS, min_size=1, max_size=5).map(".".join)
REFS = st.tuples(st.sampled_from(["egress", "mesh", "z"]), st.sampled_from(["e1", "e2", "e3"]))
DECLARED = st.one_of(HOSTS, HOSTS.map(lambda h: "*." + h))
ENTRIES = st.lists(st.tuples(REFS, st.lists(DECLARED, min_size=1, max_size=4)), max_size=6)
FAST = settings(max_examples=100, deadline=None)


def _index(entries: list[tuple[tuple[str, str], list[str]]]) -> indexing.ServiceIndex:
    index = indexing.ServiceIndex()
    for (namespace, name), declared in entries:
        index.apply_service_entry("ADDED", t.service_entry(namespace, name, declared))
    return index


def _reference(entries: list[tuple[tuple[str, str], list[str]]], host: str) -> ServiceRef | None:
    """Istio's rule, written plainly (the last write of a ServiceEntry's hosts wins)."""
    declared = {ServiceRef(*ref): hosts_ for ref, hosts_ in entries}
    exact = [ref for ref, hs in declared.items() if host in hs]
    if exact:
        return min(exact)
    best: tuple[int, ServiceRef] | None = None
    for ref, hs in declared.items():
        for h in hs:
            if h.startswith("*.") and host.endswith(h[1:]):
                candidate = (-len(h), ref)
                best = candidate if best is None or candidate < best else best
    return best[1] if best else None


@FAST
@given(ENTRIES, HOSTS)
def test_service_entry_matching_agrees_with_the_reference(
    entries: list[tuple[tuple[str, str], list[str]]], host: str
) -> None:
    assert _index(entries).service_entry_for(host) == _reference(entries, host)


@FAST
@given(ENTRIES, HOSTS)
def test_exact_beats_wildcard_and_suffix_itself_never_matches(
    entries: list[tuple[tuple[str, str], list[str]]], host: str
) -> None:
    both = [*entries, (("zz", "wild"), ["*." + host]), (("zz", "exact"), [host])]
    found = _index(both).service_entry_for(host)
    declared = {ServiceRef(*ref): hs for ref, hs in both}  # the last write of a ServiceEntry wins
    assert found is not None and host in declared[found]  # exact, never the wildcard
    assert found <= ServiceRef("zz", "exact")
    only_wild = _index([(("zz", "wild"), ["*." + host])])
    assert only_wild.service_entry_for(host) is None
    assert only_wild.service_entry_for("deep.er." + host) == ServiceRef("zz", "wild")


@FAST
@given(ENTRIES, HOSTS, HOSTS)
def test_longest_suffix_wins(
    entries: list[tuple[tuple[str, str], list[str]]], prefix: str, suffix: str
) -> None:
    host = f"{prefix}.{suffix}"
    index = _index([(("zz", "short"), ["*." + suffix]), (("zz", "long"), ["*." + host])])
    assert index.service_entry_for("leaf." + host) == ServiceRef("zz", "long")
    assert index.service_entry_for(host) == ServiceRef("zz", "short")


AUTHORITIES = st.one_of(
    HOSTS,
    st.tuples(HOSTS, st.integers(0, 70000)).map(lambda hp: f"{hp[0]}:{hp[1]}"),
    st.text(max_size=40),
    st.text(alphabet="abcXYZ.-*_:/[] 0129\x00é", max_size=30),
)


@FAST
@given(ENTRIES, AUTHORITIES)
def test_no_invalid_host_is_ever_published(
    entries: list[tuple[tuple[str, str], list[str]]], authority: str
) -> None:
    index = t.sample_index()
    for (namespace, name), declared in entries:
        index.apply_service_entry("ADDED", t.service_entry(namespace, name, declared))
    record = AccessRecord(protocol="http", caller_ip=M.PRODUCTPAGE_IP, authority=authority)
    result = edges.derive(record, None, index, edges.Options(), now=1.0)
    if isinstance(result, Rejection):
        return
    for edge in result:
        assert hosts.is_valid_host(edge.destination_host)
        if edge.destination_namespace is not None and edge.external:
            assert edge.destination_service is None
            assert index.service_entry_for(edge.destination_host) is not None


HEADERS = st.one_of(
    st.text(max_size=70),
    st.sampled_from(["shop", "Shop ", " default", "mesh-operator", "-bad", "a" * 64, ""]),
)


@FAST
@given(HEADERS)
def test_source_ns_header_never_names_a_known_caller(header: str) -> None:
    ingestor = ingesting.Ingestor(t.sample_index(), publish_unresolved=True)
    entry = t.http_entry("details:9080", headers={"slime-source-ns": header})
    outcome = ingestor.ingest(t.message(entry).SerializeToString(), ingesting.StreamState())
    assert [(e.source_namespace, e.source_name, e.source_kind) for e in outcome.edges] == [
        ("default", "productpage", "service")
    ]


@FAST
@given(HEADERS, st.sampled_from(["ratings", "www.example.com:443", "details.default"]))
def test_unresolved_namespace_is_the_header_only_when_valid(header: str, authority: str) -> None:
    ingestor = ingesting.Ingestor(t.sample_index(), publish_unresolved=True)
    entry = t.http_entry(authority, caller="10.9.9.9", headers={"slime-source-ns": header})
    stream = ingesting.StreamState()
    raw = t.message(entry, entry).SerializeToString()
    for outcome in (ingestor.ingest(raw, stream), ingestor.ingest(raw, stream)):  # cold, cached
        normalised = header.strip().lower()
        expected = normalised if hosts.is_valid_namespace(normalised) else "unknown"
        if authority == "ratings" and expected == "unknown":
            assert outcome.rejections == {Rejection.UNKNOWN_CALLER: 2}  # no namespace to complete
            continue
        [edge] = outcome.edges
        assert (edge.source_kind, edge.source_name) == ("unresolved", "10.9.9.9")
        assert edge.source_namespace == expected
        assert hosts.is_valid_namespace(edge.source_namespace)
        assert hosts.is_valid_host(edge.destination_host)
