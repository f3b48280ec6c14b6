"""Thin adapter over ``xarm.wrapper.XArmAPI`` (xarm-python-sdk 1.18.4, docs/platform.md §6-§7).

Converts SDK units (mm, the gripper's 0-850 pulses, int return codes) to SI and plain results, and
owns the exact call sequences (arming order, timed velocity, e-stop). No logic about *what* to
command: that is runtime.arm. Anything with the same public methods as XArmAPI can stand in for
it (doubles.xarm_double.XArmDouble in tests).

Control mode: mode 5, Cartesian velocity with ``duration`` (firmware watchdog), not servo mode 1.
- The timed velocity command is the one the vendor recommends because it stays safe when the
  network or this program dies: every command expires by itself after ``duration`` seconds, so a
  missing renewal is a stop (docs/platform.md §6, §12: backstop of 2-3 control periods).
- Servo mode 1 holds the last target forever, ignores speed/acc limits, and a distant first target
  runs at full speed (C24/C60 overspeed errors, docs/platform.md §13); it needs steady 100-250 Hz
  streaming that a Python node on a shared host cannot promise.
- The firmware ignores ``duration`` below 1.8.0 (the SDK silently sends -1 = forever), so
  ``supports_timed_velocity`` gates arming on the firmware version.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

MM_PER_M = 1000.0
CARTESIAN_VELOCITY_MODE = 5
STATE_READY = 0          # set_state argument: start/ready
STATE_STOP = 4           # set_state argument and reported state: stopped
MIN_TIMED_VELOCITY_FIRMWARE = (1, 8, 0)
GRIPPER_OPEN_PULSE = 850.0
GRIPPER_CLOSED_PULSE = 0.0


def gripper_joint_rad(pulse: float) -> float:
    """xarm_ros2's drive_joint angle for a gripper position: (850 - pos) / 1000 rad (0 = open)."""
    return (GRIPPER_OPEN_PULSE - pulse) / 1000.0


def closure_to_pulse(closure: float) -> float:
    """Closure in [0, 1] (0 open, 1 closed) to the gripper's position unit."""
    closure = min(max(closure, 0.0), 1.0)
    return GRIPPER_OPEN_PULSE + closure * (GRIPPER_CLOSED_PULSE - GRIPPER_OPEN_PULSE)


def quaternion_from_rpy(roll: float, pitch: float, yaw: float) -> tuple[float, float, float, float]:
    """(x, y, z, w) for the xArm's roll-pitch-yaw (fixed axes x, y, z; R = Rz Ry Rx)."""
    cr, sr = math.cos(roll / 2), math.sin(roll / 2)
    cp, sp = math.cos(pitch / 2), math.sin(pitch / 2)
    cy, sy = math.cos(yaw / 2), math.sin(yaw / 2)
    return (sr * cp * cy - cr * sp * sy, cr * sp * cy + sr * cp * sy,
            cr * cp * sy - sr * sp * cy, cr * cp * cy + sr * sp * sy)


@dataclass(frozen=True)
class XArmReading:
    """One snapshot of the SDK's cached report (no network call). SI units, base frame link_base."""

    connected: bool
    joint_positions_rad: tuple[float, ...]
    ee_position_m: np.ndarray                 # (3,)
    ee_rpy_rad: np.ndarray                    # (3,)
    state: int
    mode: int
    error_code: int
    warn_code: int


def make_xarm_api(ip: str, report_type: str) -> Any:
    """The real SDK object, not yet connected. Imported here: `import xarm` prints to stdout."""
    from xarm.wrapper import XArmAPI  # heavy, chatty vendor import

    # is_radian=True: angles in rad everywhere; report_type 'real' = the 100 Hz port 30003
    # (the default 'rich' reports at 5 Hz, too slow for learning, docs/platform.md §6).
    return XArmAPI(ip, is_radian=True, do_not_open=True, report_type=report_type,
                   enable_report=True)


class XArm:
    """The arm as fowm needs it. Every method returns quickly and never raises on SDK errors."""

    def __init__(self, api: Any, with_gripper: bool = True, gripper_speed: int = 3000) -> None:
        self.api = api
        self.with_gripper = with_gripper
        self.gripper_speed = gripper_speed
        self.last_error = ""

    @property
    def is_connected(self) -> bool:
        return bool(self.api.connected)

    def connect(self) -> bool:
        """Open the link; False (reason in ``last_error``) instead of the SDK's bare Exception."""
        try:
            self.api.connect()
        except Exception as err:  # the SDK raises a plain Exception
            self.last_error = f"connect failed: {err}"
            return False
        if not self.api.connected:
            self.last_error = "connect returned but the SDK reports no link"
            return False
        self.last_error = ""
        return True

    def disconnect(self) -> None:
        self.api.disconnect()

    def supports_timed_velocity(self) -> bool:
        return tuple(self.api.version_number) >= MIN_TIMED_VELOCITY_FIRMWARE

    def read(self) -> XArmReading:
        pose = [float(v) for v in self.api.position]
        return XArmReading(
            connected=bool(self.api.connected),
            joint_positions_rad=tuple(float(a) for a in self.api.angles),
            ee_position_m=np.array(pose[:3]) / MM_PER_M,
            ee_rpy_rad=np.array(pose[3:6]),
            state=int(self.api.state), mode=int(self.api.mode),
            error_code=int(self.api.error_code), warn_code=int(self.api.warn_code))

    def read_gripper_pulse(self) -> float | None:
        """Gripper position (a request over the control link, so callers rate-limit it)."""
        if not self.with_gripper:
            return None
        code, pos = self.api.get_gripper_position()
        return float(pos) if code == 0 and pos is not None else None

    def arm(self) -> tuple[int, str]:
        """Clean errors, enable, mode 5, ready (docs/platform.md §6 arming order). (code, step)."""
        if not self.supports_timed_velocity():
            version = ".".join(str(v) for v in self.api.version_number)
            return -100, (f"firmware {version} ignores velocity durations (needs >= 1.8.0); "
                          f"update the controller firmware")
        steps = (("clean_error", self.api.clean_error), ("clean_warn", self.api.clean_warn),
                 ("motion_enable", lambda: self.api.motion_enable(enable=True)),
                 ("set_mode(5)", lambda: self.api.set_mode(CARTESIAN_VELOCITY_MODE)),
                 ("set_state(0)", lambda: self.api.set_state(state=STATE_READY)))
        for step, call in steps:
            code = call()
            if code != 0:
                return int(code), step
        if self.with_gripper:
            for step, call in (("set_gripper_mode", lambda: self.api.set_gripper_mode(0)),
                               ("set_gripper_enable", lambda: self.api.set_gripper_enable(True)),
                               ("set_gripper_speed",
                                lambda: self.api.set_gripper_speed(self.gripper_speed))):
                code = call()
                if code != 0:
                    return int(code), step
        return 0, ""

    def send_velocity(self, velocity_m_s: np.ndarray, duration_s: float) -> int:
        """Timed TCP linear velocity in the base frame; expires after ``duration_s`` (> 0)."""
        speeds_mm_s = [float(v) * MM_PER_M for v in velocity_m_s[:3]] + [0.0, 0.0, 0.0]
        return int(self.api.vc_set_cartesian_velocity(
            speeds_mm_s, is_radian=True, is_tool_coord=False, duration=float(duration_s)))

    def stop(self, duration_s: float) -> int:
        return self.send_velocity(np.zeros(3), duration_s)

    def estop(self, duration_s: float) -> int:
        """Zero velocity, then state 4 (stop). Not the SDK's emergency_stop(): it re-enables
        motion afterwards (docs/platform.md §7); an e-stop here must leave the arm stopped."""
        self.stop(duration_s)
        return int(self.api.set_state(state=STATE_STOP))

    def set_gripper(self, closure: float) -> int:
        if not self.with_gripper:
            return 0
        return int(self.api.set_gripper_position(closure_to_pulse(closure), wait=False))
