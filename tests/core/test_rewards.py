"""Reward and success formulas of the tasks (fowm_core.tasks) at hand-made states
(docs/algorithm.md §7.1)."""

from __future__ import annotations

import numpy as np
import pytest

from fowm_core import tasks
from fowm_core.errors import ConfigError, FowmError
from fowm_core.tasks import TaskState, env_reward, reward, success
from fowm_core.tasks.lift import target_z as lift_target_z

GOAL = np.array([1.5, 0.3, 0.58])


def test_tasks_tuple():
    assert tasks.names() == ("reach", "push", "lift")


def test_reach_reward_is_distance_plus_action_penalty_times_repeat():
    state = TaskState(eef=GOAL + np.array([0.03, 0.04, 0.0]), gripper=0.0, goal=GOAL)
    action = np.array([1.0, 0.0, 0.0])
    assert env_reward("reach", state, action) == pytest.approx(-(0.05 + 0.15))
    assert reward("reach", state, action) == pytest.approx(-0.4)
    assert reward("reach", state, action, action_repeat=3) == pytest.approx(-0.6)
    assert reward("reach", state, np.zeros(3)) == pytest.approx(-0.1)


def test_actions_are_clipped_before_the_penalty():
    state = TaskState(eef=GOAL, gripper=0.0, goal=GOAL)
    assert env_reward("reach", state, np.array([2.0, -5.0, 0.0])) == pytest.approx(-0.15 * 2)


def test_reach_success_at_5_cm():
    inside = GOAL + np.array([0.0499, 0.0, 0.0])
    assert success("reach", TaskState(eef=inside, gripper=0.0, goal=GOAL))
    outside = GOAL + np.array([0.0501, 0.0, 0.0])
    assert not success("reach", TaskState(eef=outside, gripper=0.0, goal=GOAL))


def test_push_uses_the_object_not_the_tool():
    obj = GOAL + np.array([0.0, 0.03, 0.0399])
    state = TaskState(eef=GOAL + np.array([0.5, 0.0, 0.0]), gripper=0.85, obj=obj, goal=GOAL)
    dist = np.hypot(0.03, 0.0399)
    assert env_reward("push", state, np.array([0.0, 1.0, 1.0])) == pytest.approx(-(dist + 0.3))
    assert success("push", state)
    far = TaskState(eef=GOAL, gripper=0.85, obj=GOAL + np.array([0.06, 0.0, 0.0]), goal=GOAL)
    assert not success("push", far)


def _lift(obj_z: float, eef: np.ndarray | None = None, init_z: float = 0.5775) -> TaskState:
    obj = np.array([1.5, 0.2, obj_z])
    return TaskState(eef=obj if eef is None else eef, gripper=0.15, obj=obj,
                     goal=None, obj_init_z=init_z)


def test_lift_success_exactly_at_init_plus_15_cm():
    init_z = 0.5775
    assert lift_target_z(init_z) == init_z + 0.15
    assert success("lift", _lift(init_z + 0.15, init_z=init_z))
    assert not success("lift", _lift(init_z + 0.15 - 1e-6, init_z=init_z))


def test_lift_reward_far_from_the_cube():
    init_z = 0.5775
    eef = np.array([1.3, 0.2, 0.7])
    d = np.linalg.norm(eef - [1.5, 0.2, init_z])
    expected = (-d - 2 * abs(init_z - 0.7)) / 100
    state = _lift(init_z, eef)
    assert env_reward("lift", state, np.array([0, 0, 0, 1.0])) == pytest.approx(expected)


def test_lift_reward_above_the_cube_has_no_height_bonus():
    eef = np.array([1.5, 0.2, 0.65])
    state = _lift(0.5775, eef)
    assert env_reward("lift", state, np.zeros(4)) == pytest.approx(-(0.65 - 0.5775) / 100)


def test_lift_reward_close_counts_the_gripper_command():
    init_z = 0.5775
    eef = np.array([1.5, 0.2, init_z + 0.01])
    closed = env_reward("lift", _lift(init_z, eef), np.array([0, 0, 0, 1.0]))
    opened = env_reward("lift", _lift(init_z, eef), np.array([0, 0, 0, -1.0]))
    assert opened == pytest.approx(-0.01 / 100)
    assert closed == pytest.approx((-0.01 + 1 / 50) / 100)


def test_lift_pick_term_follows_the_height_and_caps_at_the_target():
    init_z = 0.5775
    partly = _lift(init_z + 0.05)                 # held: eef at the object
    assert env_reward("lift", partly, np.zeros(4)) == pytest.approx(init_z + 0.05)
    done = _lift(init_z + 0.2)
    assert env_reward("lift", done, np.zeros(4)) == pytest.approx(lift_target_z(init_z))
    assert reward("lift", done, np.zeros(4)) == pytest.approx(2 * lift_target_z(init_z))
    resting = _lift(init_z)                        # not lifted: no pick term
    assert env_reward("lift", resting, np.zeros(4)) == pytest.approx(0.0)


def test_state_validation_and_errors():
    with pytest.raises(FowmError, match=r"shape \(2,\)"):
        TaskState(eef=np.zeros(2), gripper=0.0)
    state = TaskState(eef=GOAL, gripper=0.0)
    with pytest.raises(ConfigError, match="unknown task"):
        reward("stack", state, np.zeros(3))
    with pytest.raises(FowmError, match="goal"):
        reward("reach", state, np.zeros(3))
    with pytest.raises(FowmError, match="obj"):
        success("push", TaskState(eef=GOAL, gripper=0.0, goal=GOAL))
    with pytest.raises(FowmError, match="4-d"):
        reward("lift", _lift(0.6), np.zeros(3))
    with pytest.raises(ConfigError, match="action_repeat"):
        reward("reach", TaskState(eef=GOAL, gripper=0.0, goal=GOAL), np.zeros(3), 0)


def test_task_states_compare_by_value():
    a = TaskState(eef=GOAL, gripper=0.1, obj=GOAL, goal=GOAL, obj_init_z=0.5)
    assert a == TaskState(eef=GOAL.copy(), gripper=0.1, obj=GOAL.copy(), goal=GOAL, obj_init_z=0.5)
    assert a != TaskState(eef=GOAL, gripper=0.1, obj=None, goal=GOAL, obj_init_z=0.5)
    assert a != TaskState(eef=GOAL + 1e-9, gripper=0.1, obj=GOAL, goal=GOAL, obj_init_z=0.5)
