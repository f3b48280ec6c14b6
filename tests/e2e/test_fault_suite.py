"""The fault-injection suite's fast part (benchmarks/fault_suite.py --fast), as CI runs it: at
least one row of every group (processes and the bag directory, a process SIGKILLed mid-run, the
campaign's planner faults, and the topic × class matrix of every node, the camera included), and
every row must hold."""

from __future__ import annotations

import pytest

from benchmarks import fault_nodes, fault_suite


@pytest.fixture(scope="module")
def rows() -> list[fault_suite.Row]:
    return fault_suite.run(fast=True)


def test_every_fast_fault_row_holds(rows: list[fault_suite.Row]) -> None:
    assert [r.fault for r in rows if not r.holds] == [], [r.observed for r in rows
                                                          if not r.holds]
    totals = fault_suite.summary(rows)
    assert (totals["crashes"], totals["bad_commands"], totals["untrusted_swaps"],
            totals["lost_episodes"]) == (0, 0, 0, 0)
    md = fault_suite.markdown(rows)
    assert md.count("\n| ") == len(rows) + 1 and "rows hold" in md     # + the header


def test_the_fast_subset_has_a_row_of_every_group(rows: list[fault_suite.Row]) -> None:
    names = [r.fault for r in rows]
    for needle in ("bag dir:", "second learner", "learner killed mid-checkpoint-write",
                   "twin SIGKILLed mid-episode", "ee_pose: NaN position",
                   "flood: joint_states at 1 kHz", "camera node ← device"):
        assert any(needle in n for n in names), needle
    labels = {"planner": "planner (rgb + proprio) ←", "planner_state": "planner (state obs) ←",
              "episode_manager": "episode manager ←",
              "recorder": "recorder ←", "sim": "sim twin ←", "xarm": "xarm node (SDK double) ←",
              "tracker": "tracker (twin frame with markers) ←",
              "calibration": "calibration (twin frame, arm still) ←",
              "robot_link": "robot link (checkpoints in) ←",
              "learner_link": "learner link (bags in) ←",
              "weights_shipper": "learner's weights shipper ←"}
    assert sorted(labels) == sorted(g for g, _ in fault_nodes.RIGS)
    for group, label in labels.items():
        assert any(n.startswith(label) for n in names), group
