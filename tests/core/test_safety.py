"""The safety chain's rules (docs/design.md "Safety chain"), one by one and in order."""

from __future__ import annotations

import numpy as np
import pytest

from fowm_core.errors import ConfigError
from fowm_core.runtime.safety import (
    HoldReason,
    SafetyLimits,
    check_observation,
    check_plan,
    command_to_execute,
    first_non_finite,
    safe_action,
)

LIMITS = SafetyLimits(max_obs_age_s=0.3, max_uncertainty=2.0)
GOOD = {"ee": np.array([0.1, 0.2, 0.3]), "rgb": np.zeros((3, 4, 4), np.uint8)}


def test_fresh_finite_observation_passes() -> None:
    verdict = check_observation({"image": 0.1, "ee_pose": 0.29}, GOOD, LIMITS)
    assert not verdict.hold
    assert verdict.reason is HoldReason.NONE


def test_no_observation_holds() -> None:
    assert check_observation(None, {}, LIMITS).reason is HoldReason.NO_OBSERVATION


@pytest.mark.parametrize("age", [0.3000001, 5.0, float("nan"), float("inf")])
def test_stale_or_unknown_age_holds_and_names_the_stream(age: float) -> None:
    verdict = check_observation({"ee_pose": 0.0, "image": age}, GOOD, LIMITS)
    assert verdict.reason is HoldReason.STALE
    assert "image" in verdict.detail


def test_age_exactly_at_the_limit_is_still_fresh() -> None:
    assert not check_observation({"image": 0.3}, GOOD, LIMITS).hold


# 1e30 is finite but no sensor reports it: planning on it only yields a non-finite plan later.
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e30, -2e4])
def test_non_finite_or_out_of_range_observation_holds(bad: float) -> None:
    obs = dict(GOOD, ee=np.array([0.1, bad, 0.3]))
    verdict = check_observation({"image": 0.0}, obs, LIMITS)
    assert verdict.reason is HoldReason.NON_FINITE_OBS
    assert "ee" in verdict.detail


def test_staleness_is_checked_before_finiteness() -> None:
    obs = dict(GOOD, ee=np.array([np.nan, 0, 0]))
    assert check_observation({"image": 1.0}, obs, LIMITS).reason is HoldReason.STALE


def test_integer_pixels_count_as_finite() -> None:
    assert first_non_finite({"rgb": np.full((3, 2, 2), 255, np.uint8)}) is None


def test_finite_certain_plan_passes() -> None:
    assert not check_plan(np.array([0.5, -0.2, 0.0]), 1.99, LIMITS).hold


@pytest.mark.parametrize("field", ["action", "uncertainty", "mean"])
def test_non_finite_plan_holds(field: str) -> None:
    action, unc, mean = np.zeros(3), 0.5, np.zeros((5, 3))
    if field == "action":
        action = np.array([0.0, np.nan, 0.0])
    elif field == "uncertainty":
        unc = float("nan")
    else:
        mean = np.full((5, 3), np.inf)
    verdict = check_plan(action, unc, LIMITS, extras={"mean": mean})
    assert verdict.reason is HoldReason.NON_FINITE_PLAN
    assert field in verdict.detail


def test_uncertainty_above_threshold_holds_and_reports_both_values() -> None:
    verdict = check_plan(np.zeros(3), 2.5, LIMITS)
    assert verdict.reason is HoldReason.UNCERTAIN
    assert "2.5" in verdict.detail and "2" in verdict.detail


def test_uncertainty_rule_off_when_threshold_not_positive() -> None:
    assert not check_plan(np.zeros(3), 1e9, SafetyLimits(max_uncertainty=0.0)).hold


def test_safe_action_is_zero() -> None:
    action = safe_action(4)
    assert action.dtype == np.float32
    np.testing.assert_array_equal(action, np.zeros(4))


def test_fresh_command_executes_clamped() -> None:
    action, held = command_to_execute(np.array([2.0, -0.5, 0.1]), 0.05, 0.4, 3)
    assert not held
    np.testing.assert_allclose(action, [1.0, -0.5, 0.1])


@pytest.mark.parametrize(("command", "age"), [
    (None, None),                               # never commanded
    (np.array([0.5, 0.5, 0.5]), 0.41),          # older than the timeout
    (np.array([0.5, np.nan, 0.5]), 0.0),        # non-finite
    (np.array([0.5, 0.5]), 0.0),                # wrong size
])
def test_missing_old_or_bad_command_stops_the_arm(command: np.ndarray | None,
                                                  age: float | None) -> None:
    action, held = command_to_execute(command, age, 0.4, 3)
    assert held
    np.testing.assert_array_equal(action, np.zeros(3))


@pytest.mark.parametrize("kwargs", [{"max_obs_age_s": 0.0}, {"max_obs_age_s": float("nan")},
                                    {"max_uncertainty": float("inf")}])
def test_bad_limits_are_refused_with_the_value(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match="invalid"):
        SafetyLimits(**kwargs)


@pytest.mark.parametrize("age", [-0.6, -100.0])
def test_an_age_below_minus_the_tolerance_holds_as_a_future_stamp(age: float) -> None:
    verdict = check_observation({"ee_pose": 0.01, "joint_states": age}, {}, SafetyLimits())
    assert verdict.reason is HoldReason.FUTURE_STAMP
    assert "joint_states" in verdict.detail and "ahead of the node's clock" in verdict.detail


def test_a_slightly_negative_age_within_the_tolerance_is_fresh() -> None:
    limits = SafetyLimits(max_future_s=0.5)
    assert not check_observation({"ee_pose": -0.2}, {}, limits).hold
    assert check_observation({"ee_pose": -0.2}, {}, SafetyLimits(max_future_s=0.0)).hold


def test_bad_future_tolerance_is_refused() -> None:
    with pytest.raises(ConfigError, match="max_future_s"):
        SafetyLimits(max_future_s=float("nan"))
