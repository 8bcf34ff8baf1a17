"""Every input in tests/fuzz/corpus/<target>/ (seeds and crashes the fuzzer found) meets the
target's invariant: a valid value or the documented rejection, nothing else (issue 19)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "fuzz_targets", Path(__file__).parent / "fuzz_targets.py"
)
assert _spec and _spec.loader
fuzz_targets = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz_targets)

CASES = [
    pytest.param(target, path, id=f"{target}/{path.name}")
    for target in fuzz_targets.TARGETS
    for path in sorted((fuzz_targets.CORPUS / target).glob("*"))
]


@pytest.mark.parametrize(("target", "path"), CASES)
def test_corpus_input_is_rejected_cleanly(target: str, path: Path) -> None:
    fuzz_targets.TARGETS[target](path.read_bytes())


def test_the_fuzzer_finds_and_keeps_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fuzz_targets, "CORPUS", tmp_path)

    def broken(data: bytes) -> None:
        if len(data) > 3:
            raise KeyError("planted")

    assert fuzz_targets.fallback("planted", broken, 0.2) > 0
    kept = list((tmp_path / "planted").iterdir())
    assert kept and all(len(p.read_bytes()) > 3 for p in kept)


def test_an_invalid_host_past_the_reconcilers_check_is_a_crash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The codec targets' host invariant can fail: with the check gone, the seed's bad host is
    caught."""
    monkeypatch.setattr(fuzz_targets, "invalid_reason", lambda event: None)
    seed = (fuzz_targets.CORPUS / "codec-fields" / "seed-bad-host").read_bytes()
    with pytest.raises(AssertionError, match="invalid host accepted"):
        fuzz_targets.TARGETS["codec-fields"](seed)
