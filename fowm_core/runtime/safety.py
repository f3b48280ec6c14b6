"""The planner's and the arm's safety chain as pure functions (docs/design.md "Safety chain").

Every control tick the planner asks, in order: is there an observation at all, is it fresh, is it
finite, did the plan come out finite, is the model certain enough? The first "no" turns the tick
into a *hold*: a zero action (no end-effector motion; docs/design.md: a hold is a safe command,
never a stale one) plus a reason that goes to /diagnostics. The arm side (real driver or sim twin)
applies the last rule: a command older than its timeout is never executed ("a missing command never
means keep moving").

No ROS and no torch here, so the rules are unit-tested on their own and shared by every node.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fowm_core.errors import ConfigError


class HoldReason(enum.StrEnum):
    """Why a tick published the safe command instead of the plan (first failing rule wins)."""

    NONE = "none"                      # not a hold: the plan was published
    NO_OBSERVATION = "no_observation"  # nothing synchronized has arrived yet
    STALE = "stale"                    # an observation stream is older than max_obs_age_s
    FUTURE_STAMP = "future_stamp"      # stamped ahead of the node's clock beyond max_future_s
    NON_FINITE_OBS = "non_finite_obs"  # NaN/inf in an observation
    NON_FINITE_PLAN = "non_finite_plan"  # NaN/inf in the planned action or its statistics
    UNCERTAIN = "uncertain"            # Q-ensemble std above max_uncertainty (paper Eq. 4's u)
    NO_MODEL = "no_model"              # the planner has no usable weights
    PLANNER_ERROR = "planner_error"    # planning raised; logged once, the loop keeps running
    INPUT_CONFLICT = "input_conflict"  # a second publisher of an input or of the command topic


@dataclass(frozen=True)
class SafetyLimits:
    """Thresholds of the chain. max_uncertainty <= 0 disables the uncertainty rule.
    max_future_s: how far a stamp may lie ahead of the node's clock (clock granularity, a sim
    clock one step behind its observations); beyond it the age is an error, never "fresh"."""

    max_obs_age_s: float = 0.5
    max_uncertainty: float = 0.0
    max_future_s: float = 0.5

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_obs_age_s) and self.max_obs_age_s > 0):
            msg = (f"max_obs_age_s={self.max_obs_age_s!r} is invalid: expected a finite age > 0 s "
                   "(e.g. 2-3 control periods)")
            raise ConfigError(msg)
        if not (math.isfinite(self.max_future_s) and self.max_future_s >= 0):
            msg = (f"max_future_s={self.max_future_s!r} is invalid: expected a finite tolerance "
                   ">= 0 s (e.g. 0.5)")
            raise ConfigError(msg)
        if not math.isfinite(self.max_uncertainty):
            msg = (f"max_uncertainty={self.max_uncertainty!r} is invalid: expected a finite "
                   "number (<= 0 disables the rule)")
            raise ConfigError(msg)


@dataclass(frozen=True)
class Verdict:
    """The outcome of one check: ``hold`` is True when the safe command must be sent."""

    reason: HoldReason = HoldReason.NONE
    detail: str = ""

    @property
    def hold(self) -> bool:
        return self.reason is not HoldReason.NONE


OK = Verdict()


def check_observation(ages_s: Mapping[str, float] | None,
                      arrays: Mapping[str, np.ndarray],
                      limits: SafetyLimits) -> Verdict:
    """Clock, staleness then finiteness of one synchronized observation.

    Args:
        ages_s: per-stream age (now − header stamp) in seconds; None when nothing has arrived.
            An age below −max_future_s (stamped in the future) holds: trusting it would let one
            bad stamp make every later, real observation look older and be dropped.
        arrays: the numeric content of the observation (positions, joint angles, pixels, ...).
        limits: the thresholds.
    """
    if ages_s is None:
        return Verdict(HoldReason.NO_OBSERVATION, "no synchronized observation received yet")
    for name, age in ages_s.items():
        if age < -limits.max_future_s:
            return Verdict(HoldReason.FUTURE_STAMP,
                           f"{name} is stamped {-age:.3f} s ahead of the node's clock (tolerance "
                           f"{limits.max_future_s:.3f} s): a clock or stamp is wrong")
        # A NaN age (broken stamp) must not pass the comparison below by accident.
        if not age <= limits.max_obs_age_s:
            return Verdict(HoldReason.STALE,
                           f"{name} is {age:.3f} s old (limit {limits.max_obs_age_s:.3f} s)")
    bad = first_non_finite(arrays, MAX_ABS_OBSERVATION)
    if bad is not None:
        return Verdict(HoldReason.NON_FINITE_OBS,
                       f"non-finite or out-of-range values in observation '{bad}'")
    return OK


def check_plan(action: np.ndarray, uncertainty: float, limits: SafetyLimits,
               extras: Mapping[str, np.ndarray] | None = None) -> Verdict:
    """Finiteness of the plan (action, uncertainty, extras such as its mean), then certainty."""
    arrays = {"action": np.asarray(action), "uncertainty": np.asarray(uncertainty)}
    arrays.update(extras or {})
    bad = first_non_finite(arrays)
    if bad is not None:
        return Verdict(HoldReason.NON_FINITE_PLAN, f"planner produced non-finite '{bad}'")
    if limits.max_uncertainty > 0 and uncertainty > limits.max_uncertainty:
        return Verdict(HoldReason.UNCERTAIN,
                       f"uncertainty {uncertainty:.4g} above max_uncertainty "
                       f"{limits.max_uncertainty:.4g}")
    return OK


# No position (m), angle (rad) or pixel the robot can report comes near this: a larger value is a
# broken driver or a hostile message, and planning on it only yields a non-finite plan later.
MAX_ABS_OBSERVATION = 1e4


def first_non_finite(arrays: Mapping[str, np.ndarray],
                     max_abs: float = np.inf) -> str | None:
    """Name of the first array holding NaN, inf or a magnitude above ``max_abs`` (integer
    arrays, e.g. pixels, are finite and bounded by their type)."""
    for name, value in arrays.items():
        arr = np.asarray(value)
        if arr.dtype.kind in "fc" and arr.size and not (
                np.isfinite(arr).all() and np.abs(arr).max() <= max_abs):
            return name
    return None


def safe_action(action_dim: int) -> np.ndarray:
    """The hold command: zero normalized deltas (the arm stays where it is, gripper command 0)."""
    return np.zeros(action_dim, dtype=np.float32)


def command_to_execute(command: np.ndarray | None, age_s: float | None,
                       timeout_s: float, action_dim: int) -> tuple[np.ndarray, bool]:
    """What the arm (or the sim twin) executes now: the command if younger than timeout_s, else
    the safe command. Returns (action, is_hold); non-finite commands are never executed."""
    if command is None or age_s is None or not age_s <= timeout_s:
        return safe_action(action_dim), True
    cmd = np.asarray(command, dtype=np.float32).reshape(-1)
    if cmd.shape != (action_dim,) or not np.isfinite(cmd).all():
        return safe_action(action_dim), True
    return np.clip(cmd, -1.0, 1.0), False
