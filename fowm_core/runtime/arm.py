"""Arm-command logic of the arm driver: pure numpy, no rclpy, no vendor SDK.

The planner sends normalized actions (docs/design.md: ``/fowm/action``, names ``ee_dx, ee_dy, ee_dz,
gripper``, values in [-1, 1]); the driver owns scaling, the workspace box and rate limits. This
module turns actions into bounded Cartesian velocity commands and keeps the command-timeout
bookkeeping, so the ROS node only converts messages and talks to the SDK.

Action semantics follow the twin (docs/algorithm.md §7.1): an action is a Cartesian *position delta*
of the end-effector target, ``a_xyz * max_step_m`` per agent step (the twin moves its mocap target
by a/20 m per env step with action repeat 2, i.e. 0.1 m per agent step at |a| = 1). On the real
arm the target is taken relative to the *measured* end-effector position (no wind-up when the arm
lags), clamped per axis to ``max_step_m`` and to the workspace box, and tracked with a proportional
velocity command capped by ``max_speed_m_s`` and ``max_accel_m_s2``. The gripper value maps to a
closure in [0, 1] (-1 open, +1 closed, as the twin's gripper actuator).

Safety chain (docs/design.md "Safety chain"): non-finite action → hold and report; no action for
``command_timeout_s`` → zero velocity; every velocity is capped and never pushes further out of
the box. A hold is always zero velocity, never a stale command.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fowm_core.contract.topics import ACTION_NAMES
from fowm_core.errors import ConfigError


def _meta(description: str, lo: float | None = None, hi: float | None = None) -> dict[str, Any]:
    """Field metadata read by the ROS package's params.py (description and inclusive range)."""
    meta: dict[str, Any] = {"description": description}
    if lo is not None and hi is not None:
        meta["range"] = (lo, hi)
    return meta


@dataclass(frozen=True)
class ArmLimits:
    """Scaling, workspace box and rate limits of the arm driver (SI units, frame ``link_base``).

    Defaults give the twin's scaling (0.1 m per agent step at |a| = 1; an agent step is 0.16 s)
    with a real-arm speed cap well below the xArm's 1 m/s TCP limit (C24 fires above it,
    docs/platform.md §13).
    """

    max_step_m: float = field(default=0.1, metadata=_meta(
        "target displacement per agent step at |a|=1, per axis (twin: 0.05 m x action repeat 2)",
        0.0, 0.2))
    max_speed_m_s: float = field(default=0.25, metadata=_meta(
        "cap on the commanded TCP speed (norm)", 0.0, 1.0))
    max_accel_m_s2: float = field(default=2.0, metadata=_meta(
        "cap on the change of the commanded velocity per second (norm)", 0.01, 50.0))
    tracking_gain_hz: float = field(default=8.0, metadata=_meta(
        "proportional gain from target error (m) to velocity (m/s)", 0.1, 50.0))
    command_timeout_s: float = field(default=0.4, metadata=_meta(
        "no action for this long means stop (zero velocity)", 0.02, 5.0))
    workspace_min_m: tuple[float, float, float] = field(default=(0.15, -0.35, 0.02), metadata=_meta(
        "lower corner [x, y, z] of the workspace box in link_base"))
    workspace_max_m: tuple[float, float, float] = field(default=(0.65, 0.35, 0.50), metadata=_meta(
        "upper corner [x, y, z] of the workspace box in link_base"))

    def __post_init__(self) -> None:
        lo = tuple(float(v) for v in self.workspace_min_m)
        hi = tuple(float(v) for v in self.workspace_max_m)
        object.__setattr__(self, "workspace_min_m", lo)
        object.__setattr__(self, "workspace_max_m", hi)
        if len(lo) != 3 or len(hi) != 3 or not all(a < b for a, b in zip(lo, hi, strict=True)):
            msg = (f"workspace_min_m={list(lo)} / workspace_max_m={list(hi)} do not form a box: "
                   f"expected 3 values each with min < max per axis; fix the arm driver's YAML")
            raise ConfigError(msg)
        if not all(math.isfinite(v) for v in lo + hi):
            msg = f"workspace box {list(lo)}..{list(hi)} has a non-finite bound; use finite metres"
            raise ConfigError(msg)
        for name in ("max_step_m", "max_speed_m_s", "max_accel_m_s2",
                     "tracking_gain_hz", "command_timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                msg = f"arm.{name}={value!r} is invalid: expected a finite value >= 0"
                raise ConfigError(msg)

    @property
    def box_min(self) -> np.ndarray:
        return np.asarray(self.workspace_min_m, dtype=np.float64)

    @property
    def box_max(self) -> np.ndarray:
        return np.asarray(self.workspace_max_m, dtype=np.float64)


class HoldReason(enum.StrEnum):
    """Why a tick commands zero velocity. ``NONE`` means the arm tracks a live target."""

    NONE = "none"
    NO_COMMAND = "no_command"        # nothing received since start / re-arm
    TIMEOUT = "timeout"              # last action older than command_timeout_s
    NON_FINITE = "non_finite"        # NaN/inf in the action or in the measured pose
    BAD_NAMES = "bad_names"          # the action does not name ee_dx, ee_dy, ee_dz, gripper


@dataclass(frozen=True)
class ActionVerdict:
    """What ``ArmCommander.set_action`` made of one action message."""

    accepted: bool
    reason: HoldReason
    target_m: np.ndarray | None          # (3,) clamped target, link_base
    gripper_closure: float | None        # [0, 1], 0 open, 1 closed
    was_clamped: bool                    # the box or the [-1, 1] clip changed the request
    detail: str = ""


@dataclass(frozen=True)
class VelocityCommand:
    """One bounded command for the arm: TCP linear velocity (3,) m/s; zero when ``hold`` != NONE."""

    velocity_m_s: np.ndarray
    hold: HoldReason


def parse_action(names: list[str] | tuple[str, ...], values: list[float] | np.ndarray,
                 ) -> tuple[np.ndarray | None, HoldReason, str]:
    """Order an action by ``ACTION_NAMES``. Returns (values (4,) or None, reason, detail)."""
    names = list(names)
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(names) != len(values) or any(n not in names for n in ACTION_NAMES):
        detail = (f"action names {names} with {len(values)} values; expected names "
                  f"{list(ACTION_NAMES)} and one value each")
        return None, HoldReason.BAD_NAMES, detail
    ordered = np.array([values[names.index(n)] for n in ACTION_NAMES], dtype=np.float64)
    if not np.all(np.isfinite(ordered)):
        return None, HoldReason.NON_FINITE, f"non-finite action {ordered.tolist()}"
    return ordered, HoldReason.NONE, ""


def clamp_to_box(point_m: np.ndarray, limits: ArmLimits) -> np.ndarray:
    """Clamp a (3,) point into the workspace box."""
    return np.clip(point_m, limits.box_min, limits.box_max)


def step_target(ee_m: np.ndarray, a_xyz: np.ndarray, limits: ArmLimits) -> tuple[np.ndarray, bool]:
    """Target = measured EE + clip(a, -1, 1) * max_step_m, clamped to the box.

    Returns (target (3,), whether the clip or the box changed the request).
    """
    a_clipped = np.clip(a_xyz, -1.0, 1.0)
    raw = ee_m + a_clipped * limits.max_step_m
    target = clamp_to_box(raw, limits)
    was_clamped = bool(np.any(a_clipped != a_xyz) or np.any(target != raw))
    return target, was_clamped


def bounded_velocity(ee_m: np.ndarray, target_m: np.ndarray, previous_m_s: np.ndarray,
                     dt_s: float, limits: ArmLimits) -> np.ndarray:
    """P-tracking velocity to the target, capped in speed and acceleration, never out of the box.

    Slowing down along the same direction is allowed at once, because it is the safe direction (the
    firmware's own TCP deceleration limits the real stop); speeding up or turning is rate-limited.
    """
    v = limits.tracking_gain_hz * (target_m - ee_m)
    speed = float(np.linalg.norm(v))
    if speed > limits.max_speed_m_s:
        v = v * (limits.max_speed_m_s / speed)
    dv = v - previous_m_s
    max_dv = limits.max_accel_m_s2 * max(dt_s, 0.0)
    dv_norm = float(np.linalg.norm(dv))
    speed_now, speed_before = float(np.linalg.norm(v)), float(np.linalg.norm(previous_m_s))
    is_slowing = (speed_now <= speed_before
                  and float(np.dot(v, previous_m_s)) >= 0.99 * speed_now * speed_before)
    if dv_norm > max_dv and not is_slowing:
        v = previous_m_s + dv * (max_dv / dv_norm)
    # Never push further out of the box along an axis that is at or past its bound.
    v = np.where((ee_m >= limits.box_max) & (v > 0.0), 0.0, v)
    v = np.where((ee_m <= limits.box_min) & (v < 0.0), 0.0, v)
    return v


class ArmCommander:
    """Holds the live target and the timeout bookkeeping; one instance per arm driver.

    Time is passed in (monotonic seconds) so the same logic runs under tests, sim time and hardware.
    """

    def __init__(self, limits: ArmLimits) -> None:
        self.limits = limits
        self._target_m: np.ndarray | None = None
        self._last_action_s: float | None = None
        self._velocity_m_s = np.zeros(3)
        self._hold = HoldReason.NO_COMMAND

    @property
    def last_action_s(self) -> float | None:
        """Receive time (the caller's clock) of the last action, accepted or not."""
        return self._last_action_s

    @property
    def target_m(self) -> np.ndarray | None:
        return None if self._target_m is None else self._target_m.copy()

    def reset(self) -> None:
        """Forget the target (after a fault, e-stop, reconnect or re-arm): nothing resumes."""
        self._target_m = None
        self._last_action_s = None
        self._velocity_m_s = np.zeros(3)
        self._hold = HoldReason.NO_COMMAND

    def set_action(self, names: list[str] | tuple[str, ...], values: list[float] | np.ndarray,
                   ee_m: np.ndarray, now_s: float) -> ActionVerdict:
        """Validate an action and set the new target; a rejected action drops the old target."""
        ordered, reason, detail = parse_action(names, values)
        ee_m = np.asarray(ee_m, dtype=np.float64)
        if ordered is not None and not np.all(np.isfinite(ee_m)):
            ordered, reason, detail = None, HoldReason.NON_FINITE, f"non-finite EE pose {ee_m}"
        if ordered is None:
            # A bad action means "hold now", not "keep the old target" (docs/design.md "Safety
            # chain").
            self._target_m = None
            self._last_action_s = now_s
            self._hold = reason
            return ActionVerdict(False, reason, None, None, False, detail)
        target, was_clamped = step_target(ee_m, ordered[:3], self.limits)
        self._target_m = target
        self._last_action_s = now_s
        self._hold = HoldReason.NONE
        closure = float((np.clip(ordered[3], -1.0, 1.0) + 1.0) / 2.0)
        return ActionVerdict(True, HoldReason.NONE, target.copy(), closure,
                             was_clamped or bool(abs(ordered[3]) > 1.0))

    def is_timed_out(self, now_s: float) -> bool:
        return (self._last_action_s is not None
                and now_s - self._last_action_s > self.limits.command_timeout_s)

    def tick(self, ee_m: np.ndarray, now_s: float, dt_s: float) -> VelocityCommand:
        """The command for this control tick: zero velocity whenever anything is missing/stale."""
        ee_m = np.asarray(ee_m, dtype=np.float64)
        if self.is_timed_out(now_s):
            self._target_m = None
            self._hold = HoldReason.TIMEOUT
        elif self._target_m is not None and not np.all(np.isfinite(ee_m)):
            self._target_m = None
            self._hold = HoldReason.NON_FINITE
        if self._target_m is None:
            self._velocity_m_s = np.zeros(3)
            return VelocityCommand(np.zeros(3), self._hold)
        v = bounded_velocity(ee_m, self._target_m, self._velocity_m_s, dt_s, self.limits)
        self._velocity_m_s = v
        return VelocityCommand(v.copy(), HoldReason.NONE)


class GateState(enum.StrEnum):
    """Whether the driver may send motion. Only ``ARMED`` moves; every other state sends nothing."""

    DISCONNECTED = "disconnected"
    DISARMED = "disarmed"            # connected, waiting for a re-arm request
    ARMED = "armed"
    FAULT = "fault"                  # the controller reported an error while armed
    ESTOPPED = "estopped"


class ArmGate:
    """Arm/disarm bookkeeping. Nothing here arms by itself: only ``arm_succeeded`` after a request.

    A reconnect lands in DISARMED even if the controller kept its mode and state across the drop, so
    the arm never moves on its own after a reconnect (docs/platform.md §6: the vendor driver does
    not reconnect either; we supervise the link and fail safe).
    """

    def __init__(self) -> None:
        self.state = GateState.DISCONNECTED
        self.fault_code = 0

    @property
    def is_armed(self) -> bool:
        return self.state is GateState.ARMED

    def on_connected(self) -> None:
        if self.state is GateState.DISCONNECTED:
            self.state = GateState.DISARMED

    def on_disconnected(self) -> None:
        self.state = GateState.DISCONNECTED

    def on_error(self, code: int) -> None:
        """A controller error while armed: stop sending until someone asks to clean and re-arm."""
        if self.state is GateState.ARMED:
            self.state = GateState.FAULT
            self.fault_code = int(code)

    def on_estop(self) -> None:
        if self.state is not GateState.DISCONNECTED:
            self.state = GateState.ESTOPPED

    def can_arm(self) -> tuple[bool, str]:
        if self.state is GateState.DISCONNECTED:
            return False, "the arm is not connected; check the cable/IP and wait for the reconnect"
        return True, ""

    def arm_succeeded(self) -> None:
        self.state = GateState.ARMED
        self.fault_code = 0

    def arm_failed(self, code: int) -> None:
        if self.state is not GateState.DISCONNECTED:
            self.state = GateState.FAULT
            self.fault_code = int(code)
