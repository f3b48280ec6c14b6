"""runtime.arm: action scaling, box clamp, speed/step limits, timeout bookkeeping, arm gate."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from fowm_core.contract.topics import ACTION_NAMES
from fowm_core.errors import ConfigError
from fowm_core.runtime.arm import (
    ArmCommander,
    ArmGate,
    ArmLimits,
    GateState,
    HoldReason,
    bounded_velocity,
    parse_action,
    step_target,
)

NAMES = list(ACTION_NAMES)
CENTRE = np.array([0.4, 0.0, 0.25])


def test_defaults_follow_the_twin_scaling() -> None:
    # docs/algorithm.md §7.1: a/20 m per env step, action repeat 2 -> 0.1 m per agent step
    # at |a| = 1.
    assert ArmLimits().max_step_m == pytest.approx(0.1)


@pytest.mark.parametrize("kwargs", [
    {"workspace_min_m": (0.5, 0.0, 0.0), "workspace_max_m": (0.4, 0.1, 0.1)},
    {"workspace_min_m": (0.0, 0.0), "workspace_max_m": (0.4, 0.1, 0.1)},
    {"workspace_max_m": (math.inf, 0.1, 0.1)},
    {"max_speed_m_s": -0.1},
    {"command_timeout_s": math.nan},
])
def test_bad_limits_raise_config_error_naming_the_value(kwargs: dict) -> None:
    with pytest.raises(ConfigError) as err:
        ArmLimits(**kwargs)
    key = next(iter(kwargs))
    assert key.split("_")[0] in str(err.value)


def test_lists_from_yaml_become_tuples() -> None:
    limits = ArmLimits(workspace_min_m=[0.1, -0.1, 0.0], workspace_max_m=[0.5, 0.1, 0.3])
    assert limits.workspace_min_m == (0.1, -0.1, 0.0)
    assert hash(limits)  # still a frozen, hashable config


def test_parse_action_orders_by_name_and_flags_problems() -> None:
    values, reason, _ = parse_action(["gripper", "ee_dz", "ee_dy", "ee_dx"], [0.5, 0.3, 0.2, 0.1])
    assert reason is HoldReason.NONE
    np.testing.assert_allclose(values, [0.1, 0.2, 0.3, 0.5])
    assert parse_action(["ee_dx", "ee_dy"], [0.0, 0.0])[1] is HoldReason.BAD_NAMES
    assert parse_action(NAMES, [0.0, 0.0, 0.0])[1] is HoldReason.BAD_NAMES
    values, reason, detail = parse_action(NAMES, [0.0, math.nan, 0.0, 0.0])
    assert values is None and reason is HoldReason.NON_FINITE and "nan" in detail


def test_step_target_scales_clips_and_clamps_to_the_box() -> None:
    limits = ArmLimits()
    target, clamped = step_target(CENTRE, np.array([0.5, -0.5, 0.0]), limits)
    np.testing.assert_allclose(target, CENTRE + np.array([0.05, -0.05, 0.0]))
    assert not clamped
    # |a| > 1 is clipped: the per-step limit holds whatever the planner sends.
    target, clamped = step_target(CENTRE, np.array([7.0, 0.0, 0.0]), limits)
    np.testing.assert_allclose(target, CENTRE + np.array([0.1, 0.0, 0.0]))
    assert clamped
    # Near the top of the box the target stops at the box.
    near_top = np.array([0.4, 0.0, limits.workspace_max_m[2] - 0.01])
    target, clamped = step_target(near_top, np.array([0.0, 0.0, 1.0]), limits)
    assert target[2] == pytest.approx(limits.workspace_max_m[2])
    assert clamped


def test_bounded_velocity_caps_speed_and_acceleration() -> None:
    limits = ArmLimits(max_speed_m_s=0.2, max_accel_m_s2=1.0, tracking_gain_hz=10.0)
    far = CENTRE + np.array([0.1, 0.1, 0.0])
    v = bounded_velocity(CENTRE, far, np.zeros(3), dt_s=0.02, limits=limits)
    assert np.linalg.norm(v) == pytest.approx(1.0 * 0.02)      # accel-limited first tick
    v_prev = np.array([0.2, 0.0, 0.0])
    v = bounded_velocity(CENTRE, CENTRE + np.array([1.0, 0.0, 0.0]), v_prev, 0.02, limits)
    assert np.linalg.norm(v) <= 0.2 + 1e-12                       # speed cap
    # Slowing down along the same direction is immediate (safe direction).
    v = bounded_velocity(CENTRE, CENTRE + np.array([0.001, 0.0, 0.0]), v_prev, 0.02, limits)
    np.testing.assert_allclose(v, [0.01, 0.0, 0.0])
    # Turning is rate-limited like speeding up.
    v = bounded_velocity(CENTRE, CENTRE + np.array([0.0, 0.01, 0.0]), v_prev, 0.02, limits)
    assert np.linalg.norm(v - v_prev) == pytest.approx(0.02)


def test_bounded_velocity_never_pushes_further_out_of_the_box() -> None:
    limits = ArmLimits(max_accel_m_s2=50.0)
    outside = np.array([limits.workspace_max_m[0] + 0.05, 0.0, 0.25])
    v = bounded_velocity(outside, outside + np.array([0.05, 0.0, 0.0]), np.zeros(3), 0.02, limits)
    assert v[0] == 0.0
    v = bounded_velocity(outside, outside - np.array([0.05, 0.0, 0.0]), np.zeros(3), 0.02, limits)
    assert v[0] < 0.0


def test_commander_tracks_then_stops_after_the_timeout() -> None:
    limits = ArmLimits(command_timeout_s=0.3, max_accel_m_s2=50.0)
    cmd = ArmCommander(limits)
    assert cmd.tick(CENTRE, now_s=0.0, dt_s=0.02).hold is HoldReason.NO_COMMAND
    verdict = cmd.set_action(NAMES, [1.0, 0.0, 0.0, -1.0], CENTRE, now_s=1.0)
    assert verdict.accepted and verdict.gripper_closure == 0.0
    out = cmd.tick(CENTRE, now_s=1.02, dt_s=0.02)
    assert out.hold is HoldReason.NONE and out.velocity_m_s[0] > 0.0
    assert out.velocity_m_s[1] == 0.0 and out.velocity_m_s[2] == 0.0
    out = cmd.tick(CENTRE, now_s=1.0 + 0.31, dt_s=0.02)
    assert out.hold is HoldReason.TIMEOUT
    np.testing.assert_array_equal(out.velocity_m_s, np.zeros(3))
    # The old target does not come back when time moves on.
    assert cmd.tick(CENTRE, now_s=2.0, dt_s=0.02).hold is HoldReason.TIMEOUT


def test_commander_simulated_tracking_converges_inside_the_box() -> None:
    limits = ArmLimits(command_timeout_s=10.0)
    cmd = ArmCommander(limits)
    ee = CENTRE.copy()
    cmd.set_action(NAMES, [1.0, -1.0, 1.0, 0.0], ee, now_s=0.0)
    target = cmd.target_m
    dt = 0.02
    for k in range(200):
        ee = ee + cmd.tick(ee, now_s=k * dt, dt_s=dt).velocity_m_s * dt
    np.testing.assert_allclose(ee, target, atol=1e-3)
    assert np.all(ee <= limits.box_max + 1e-9) and np.all(ee >= limits.box_min - 1e-9)


def test_nan_action_holds_and_drops_the_previous_target() -> None:
    cmd = ArmCommander(ArmLimits())
    cmd.set_action(NAMES, [1.0, 0.0, 0.0, 0.0], CENTRE, now_s=0.0)
    verdict = cmd.set_action(NAMES, [math.nan, 0.0, 0.0, 0.0], CENTRE, now_s=0.1)
    assert not verdict.accepted and verdict.reason is HoldReason.NON_FINITE
    out = cmd.tick(CENTRE, now_s=0.12, dt_s=0.02)
    assert out.hold is HoldReason.NON_FINITE
    np.testing.assert_array_equal(out.velocity_m_s, np.zeros(3))


def test_non_finite_pose_holds() -> None:
    cmd = ArmCommander(ArmLimits())
    cmd.set_action(NAMES, [1.0, 0.0, 0.0, 0.0], CENTRE, now_s=0.0)
    out = cmd.tick(np.array([math.nan, 0.0, 0.2]), now_s=0.02, dt_s=0.02)
    assert out.hold is HoldReason.NON_FINITE and not np.any(out.velocity_m_s)


def test_reset_forgets_the_target() -> None:
    cmd = ArmCommander(ArmLimits())
    cmd.set_action(NAMES, [1.0, 0.0, 0.0, 0.0], CENTRE, now_s=0.0)
    cmd.reset()
    assert cmd.target_m is None
    assert cmd.tick(CENTRE, now_s=0.01, dt_s=0.01).hold is HoldReason.NO_COMMAND


def test_gate_never_arms_by_itself() -> None:
    gate = ArmGate()
    assert gate.state is GateState.DISCONNECTED and not gate.can_arm()[0]
    gate.on_connected()
    assert gate.state is GateState.DISARMED and not gate.is_armed
    gate.arm_succeeded()
    gate.on_error(31)
    assert gate.state is GateState.FAULT and gate.fault_code == 31
    gate.on_connected()                      # a stray connect event does not re-arm
    assert gate.state is GateState.FAULT
    gate.arm_succeeded()
    gate.on_disconnected()
    gate.on_connected()
    assert gate.state is GateState.DISARMED  # a reconnect never restores ARMED
    gate.on_estop()
    assert gate.state is GateState.ESTOPPED


def test_limits_replace_keeps_validation() -> None:
    with pytest.raises(ConfigError):
        dataclasses.replace(ArmLimits(), workspace_max_m=(0.0, 0.0, 0.0))
