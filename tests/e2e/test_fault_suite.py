"""The fault-injection suite's fast part (benchmarks/fault_suite.py --fast), as CI runs it.

Rows this branch is responsible for must hold; a row waiting for other work of issue 11 must say
which (``needs``), so nothing fails silently. Once typed messages and the trust layer are merged,
every row must hold: tighten the last assertion to ``all(r.holds for r in rows)``."""

from __future__ import annotations

import pytest

from benchmarks import fault_suite


@pytest.fixture(scope="module")
def rows() -> list[fault_suite.Row]:
    return fault_suite.run(fast=True)


def test_the_fast_fault_rows_hold_or_name_what_they_wait_for(rows: list[fault_suite.Row]) -> None:
    by_name = {r.fault: r for r in rows}
    for name in ("bag dir: stray top-level metadata.yaml, a file, a half-written dir",
                 "learner killed mid-checkpoint-write (temp file + torn newest file)",
                 "second learner on one work directory",
                 "flood: joint_states at 1 kHz from a second publisher",
                 "ee_pose: NaN position"):
        assert by_name[name].holds, f"{name}: {by_name[name].observed}"
    assert all(r.holds or r.needs for r in rows), [r.fault for r in rows if not r.holds]
    assert sum(r.bad_commands or 0 for r in rows) == 0          # never a non-finite command
    assert sum(r.lost_episodes or 0 for r in rows) == 0
    md = fault_suite.markdown(rows)
    assert md.count("\n| ") == len(rows) + 1 and "rows hold" in md     # + the header
