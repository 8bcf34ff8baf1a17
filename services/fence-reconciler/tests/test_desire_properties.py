"""Properties of `desiring.desire` over generated fences (hypothesis, pure).

Covers: the computation is a fixpoint (once its status is written, the same inputs need no
write and no new revision); revisions never go down; every rendered host has a reason; learned
hosts are never lost without reset or recycling; all of this with VirtualService expansion too,
and the recorded reasons read back equal the computed ones.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from lazyload_fence_reconciler import desiring, expanding, fences

NOW = 1_700_000_000.0
label = st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True)
host = st.builds(lambda a, b: f"{a}.{b}.svc.cluster.local", label, label)
spec_key = st.one_of(host, st.builds(lambda ns: f"{ns}/*", label))
edge = st.builds(
    lambda h, port, dt: desiring.Edge(h, port, NOW - dt, NOW - dt / 2),
    host,
    st.one_of(st.none(), st.integers(1, 65535)),
    st.floats(0, 10_000),
)
mesh = st.builds(
    lambda routes: expanding.Mesh(routes={h: frozenset(d) for h, d in routes.items() if d}),
    st.dictionaries(host, st.sets(host, max_size=3), max_size=4),
)


def _written(fence: fences.Fence, status: dict[str, object]) -> fences.Fence:
    body = {
        "metadata": {"namespace": fence.namespace, "name": fence.name, "uid": "u"},
        "spec": {
            "enable": fence.enable,
            "host": {k: {} for k in fence.spec_hosts},
            "workloadSelector": {"fromService": True},
        },
        "status": status,
    }
    return fences.Fence.from_raw(body)


@settings(max_examples=60, deadline=None)
@given(
    spec=st.lists(spec_key, max_size=4),
    batches=st.lists(st.lists(edge, max_size=6), max_size=4),
    enable=st.booleans(),
    selector=st.one_of(st.none(), st.dictionaries(label, label, min_size=1, max_size=2)),
    routes=mesh,
)
def test_fixpoint_monotonic_and_explained(spec, batches, enable, selector, routes) -> None:
    body = fences.new_fence_body("default", "caller")
    body["spec"]["enable"] = enable
    body["spec"]["host"] = {k: {} for k in spec}
    fence = fences.Fence.from_raw(body)
    learned: set[str] = set()
    revision = 0
    for batch in batches or [[]]:
        desired = desiring.desire(fence, batch, service_selector=selector, now=NOW, mesh=routes)
        assert desired.state.revision >= revision
        revision = desired.state.revision
        fence = _written(fence, desired.status)
        learned |= {e.host for e in batch}
        assert learned <= set(desired.state.hosts)
        assert all(desired.state.reasons[h] for h in desired.state.hosts)
        again = desiring.desire(fence, [], service_selector=selector, now=NOW, mesh=routes)
        assert not again.write_needed and not again.changed
        assert again.state == desired.state
        assert desiring.recorded(fence).reasons == desired.state.reasons


def test_conditions_of_others_keep_their_place() -> None:
    """A condition another component wrote before SpecValid stays first: no reordering write."""
    from lazyload_fence_reconciler import desiring as d
    from lazyload_fence_reconciler import fences as f

    ready = {
        "type": "SidecarReady",
        "status": "True",
        "reason": "SidecarApplied",
        "message": "",
        "observedGeneration": 1,
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    valid = {
        "type": "SpecValid",
        "status": "True",
        "reason": "Valid",
        "message": "",
        "observedGeneration": 1,
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    for order in ([valid, ready], [ready, valid]):
        raw = {
            "apiVersion": "microservice.slime.io/v1alpha1",
            "kind": "ServiceFence",
            "metadata": {"name": "a", "namespace": "default", "generation": 1, "uid": "u"},
            "spec": {"enable": True},
            "status": {"conditions": order},
        }
        fence = f.Fence.from_raw(raw)
        assert d._conditions(fence, (), now=1e9) == order
