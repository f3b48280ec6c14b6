"""A stand-in for ``xarm.wrapper.XArmAPI`` with the same public methods the adapter uses.

Signatures (names, parameters, defaults) are checked against the real class in
tests/nodes/test_xarm_node.py, so the adapter cannot call something the SDK does not have.
Behaviour follows docs/platform.md §6-§7: setters return int codes (0 ok, -1 not connected), getters
(code, value); errors drop the controller to state 4 / mode 0 and it ignores motion until
clean_error + set_mode + set_state(0); mode-5 velocity with ``duration > 0`` integrates the
position and expires by itself; the controller keeps its mode/state across a link drop.
Methods prefixed ``sim_`` are the test's handles (inject errors, drop the link) and exist only here.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

NOT_CONNECTED = -1
HAS_ERROR = 1            # the SDK's code for "the controller has an error"
WRONG_MODE_OR_STATE = 9  # refused: not in mode 5 / not ready (illustrative code)


class XArmDouble:
    """A 7-axis xArm with a gripper, integrating mode-5 velocity commands over real time."""

    def __init__(self, port=None, is_radian=False, do_not_open=False, **kwargs):
        self.port = port
        self.is_radian = is_radian
        self._clock: Callable[[], float] = kwargs.get("clock", time.monotonic)
        self._lock = threading.Lock()
        self._connected = False
        self.sim_connect_allowed = True
        self.sim_firmware = (2, 3, 0)
        self._state, self._mode, self._pending_mode = 4, 0, 0
        self._enabled = False
        self._error, self._warn = 0, 0
        self._pos_mm = [400.0, 0.0, 250.0]
        self._rpy = [math.pi, 0.0, 0.0]
        self._velocity_mm_s = [0.0, 0.0, 0.0]
        self._velocity_until = 0.0
        self._last_update = self._clock()
        self._gripper = 850.0
        self.sim_commands: list[tuple[float, list[float], float]] = []  # (t, speeds, duration)
        self.sim_calls: list[str] = []
        if not do_not_open:
            self.connect()

    # --- the SDK surface -------------------------------------------------------------------
    def connect(self, port=None, baudrate=None, timeout=None, axis=None, **kwargs):
        self.sim_calls.append("connect")
        if not self.sim_connect_allowed:
            msg = "connect socket failed"
            raise Exception(msg)  # what the real SDK raises
        self._connected = True

    def disconnect(self):
        self.sim_calls.append("disconnect")
        self._connected = False

    def motion_enable(self, enable=True, servo_id=None):
        return self._setter("motion_enable", lambda: setattr(self, "_enabled", bool(enable)))

    def set_mode(self, mode=0, detection_param=0):
        # The controller applies a new mode on the next set_state(0), as the real one does.
        return self._setter("set_mode", lambda: setattr(self, "_pending_mode", int(mode)))

    def set_state(self, state=0):
        def apply() -> None:
            self._integrate()
            if state == 0 and self._enabled and self._error == 0:
                self._state, self._mode = 2, self._pending_mode
            elif state in (3, 4, 6):
                self._velocity_until = 0.0
                self._state = 4 if state in (4, 6) else 3
        return self._setter(f"set_state({state})", apply)

    def clean_error(self):
        return self._setter("clean_error", lambda: setattr(self, "_error", 0))

    def clean_warn(self):
        return self._setter("clean_warn", lambda: setattr(self, "_warn", 0))

    def vc_set_cartesian_velocity(self, speeds, is_radian=None, is_tool_coord=False,
                                  duration=-1, **kwargs):
        with self._lock:
            if not self._connected:
                return NOT_CONNECTED
            self._integrate()
            if self._error:
                return HAS_ERROR
            if self._mode != 5 or self._state not in (1, 2):
                return WRONG_MODE_OR_STATE
            now = self._clock()
            self.sim_commands.append((now, [float(s) for s in speeds], float(duration)))
            self._velocity_mm_s = [float(s) for s in speeds[:3]]
            self._velocity_until = now + duration if duration > 0 else math.inf
            self._state = 1 if any(self._velocity_mm_s) else 2
            return 0

    def set_gripper_mode(self, mode, **kwargs):
        return self._setter("set_gripper_mode", lambda: None)

    def set_gripper_enable(self, enable, **kwargs):
        return self._setter("set_gripper_enable", lambda: None)

    def set_gripper_speed(self, speed, **kwargs):
        return self._setter("set_gripper_speed", lambda: None)

    def set_gripper_position(self, pos, wait=False, speed=None, auto_enable=False,
                             timeout=None, **kwargs):
        return self._setter("set_gripper_position",
                            lambda: setattr(self, "_gripper", min(max(float(pos), 0.0), 850.0)))

    def get_gripper_position(self, **kwargs):
        with self._lock:
            return (0, self._gripper) if self._connected else (NOT_CONNECTED, None)

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def state(self) -> int:
        with self._lock:
            self._integrate()
            return self._state

    @property
    def mode(self) -> int:
        return self._mode

    @property
    def error_code(self) -> int:
        return self._error

    @property
    def warn_code(self) -> int:
        return self._warn

    @property
    def version_number(self) -> tuple[int, int, int]:
        return self.sim_firmware

    @property
    def position(self) -> list[float]:
        with self._lock:
            self._integrate()
            return [*self._pos_mm, *self._rpy]

    @property
    def angles(self) -> list[float]:
        # Not kinematics: joint1 follows the base azimuth so joint states move with the arm.
        with self._lock:
            self._integrate()
            return [math.atan2(self._pos_mm[1], self._pos_mm[0]), 0.2, 0.0, 0.8, 0.0, 0.6, 0.0]

    # --- test handles ----------------------------------------------------------------------
    def sim_inject_error(self, code: int) -> None:
        """A controller error (e.g. collision C31): stop, state 4, mode 0, as the firmware does."""
        with self._lock:
            self._integrate()
            self._error, self._state, self._mode = int(code), 4, 0
            self._velocity_until = 0.0

    def sim_drop_link(self, allow_reconnect: bool = False) -> None:
        """The network goes away; the controller keeps running (and keeps its mode and state)."""
        with self._lock:
            self._integrate()
            self._connected = False
            self.sim_connect_allowed = allow_reconnect

    def sim_velocity_mm_s(self) -> list[float]:
        with self._lock:
            self._integrate()
            return list(self._velocity_mm_s) if self._clock() < self._velocity_until else [0.0] * 3

    # --- internals -------------------------------------------------------------------------
    def _setter(self, name: str, apply: Callable[[], None]) -> int:
        with self._lock:
            self.sim_calls.append(name)
            if not self._connected:
                return NOT_CONNECTED
            apply()
            return 0

    def _integrate(self) -> None:
        """Advance the position to now: the commanded velocity holds until its duration expires."""
        now = self._clock()
        moving_until = min(now, self._velocity_until)
        dt = max(0.0, moving_until - self._last_update)
        for axis in range(3):
            self._pos_mm[axis] += self._velocity_mm_s[axis] * dt
        if now >= self._velocity_until:
            self._velocity_mm_s = [0.0, 0.0, 0.0]
            if self._state == 1:
                self._state = 2
        self._last_update = now
