"""bench/REPORT.md's hand-kept history section survives a new run (`report.with_history`)."""

from __future__ import annotations

from pathlib import Path

from bench import report


def test_a_new_report_keeps_the_history_of_the_one_it_replaces(tmp_path: Path) -> None:
    previous = tmp_path / "REPORT.md"
    assert report.with_history("# new\n", previous) == "# new\n"  # no earlier report
    previous.write_text("# old\n\n| old table |\n")
    assert report.with_history("# new\n", previous) == "# new\n"  # nor a history in it
    previous.write_text("# old\n\n| old table |\n\n## History\n\n- 2026-11-26: 71 %\n")
    kept = report.with_history("# new\n\n| new table |\n", previous)
    assert kept == "# new\n\n| new table |\n\n## History\n\n- 2026-11-26: 71 %\n"
    previous.write_text(kept)
    assert report.with_history("# newer\n", previous).count("## History") == 1
