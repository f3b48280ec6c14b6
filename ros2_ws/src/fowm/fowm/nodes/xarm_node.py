"""fowm_xarm: the xArm driver node (docs/design.md topic contract and safety chain).

Publishes ``/xarm/joint_states`` (joint1..N + the gripper's drive_joint, rad), ``/xarm/ee_pose``
(link_base, m) and /diagnostics; executes normalized actions from ``/fowm/action`` as bounded,
timed Cartesian velocities (mode 5 with a firmware ``duration``; why: fowm.hardware.xarm).

State comes from polling the SDK's cached report in the control timer, not from the SDK's report
callback: the cache is filled at 100 Hz by the SDK's own thread (report_type 'real'), reading it
costs no network round trip, and polling keeps every publish and command on the executor thread
at one parameterized rate (no cross-thread state, no callback storms when the link flaps). The
gripper position is a real request on the control link, so it is polled at its own lower rate.

Safety: nothing moves unless armed, and only ``~/rearm`` (std_srvs/Trigger) arms: after start, a
fault, an e-stop (``~/estop``) or a reconnect the node stays disarmed; a controller error while
moving stops all sending until someone asks to clean and re-arm. Each command expires in
``velocity_duration_s`` on the controller itself, so a dead node or network is a stop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_srvs.srv import Trigger

from fowm.hardware.xarm import (
    XArm,
    XArmReading,
    gripper_joint_rad,
    make_xarm_api,
    quaternion_from_rpy,
)
from fowm.ros import qos
from fowm.ros.diagnostics import ERROR, OK, WARN, DiagnosticsReporter
from fowm.ros.guard import InputGuard
from fowm.ros.params import LiveGroup, declare_from_dataclass, only_tighter, watch_live
from fowm.ros.spin import run_nodes
from fowm_core.contract import topics
from fowm_core.data.convert import stamp_ns
from fowm_core.errors import ConfigError
from fowm_core.runtime.arm import ArmCommander, ArmGate, ArmLimits, GateState, HoldReason


@dataclass(frozen=True)
class XArmNodeConfig:
    """Node parameters besides the motion limits (``limits.*``: fowm_core.runtime.arm.ArmLimits)."""

    robot_ip: str = field(default="192.168.1.185", metadata={"description": "controller IP"})
    report_type: str = field(default="real", metadata={
        "description": "SDK report stream: real (100 Hz, port 30003), rich or normal (5 Hz)"})
    dof: int = field(default=7, metadata={"description": "number of arm joints", "range": (5, 7)})
    rate_hz: float = field(default=50.0, metadata={
        "description": "control and state-publish rate", "range": (30.0, 250.0)})
    velocity_duration_s: float = field(default=0.06, metadata={
        "description": "firmware watchdog per velocity command (~3 control periods)",
        "range": (0.01, 1.0)})
    with_gripper: bool = field(default=True, metadata={"description": "an xArm gripper is fitted"})
    gripper_poll_hz: float = field(default=30.0, metadata={
        "description": "gripper position requests per second", "range": (1.0, 100.0)})
    gripper_deadband: float = field(default=0.02, metadata={
        "description": "closure change that triggers a new gripper command", "range": (0.0, 1.0)})
    reconnect_period_s: float = field(default=2.0, metadata={
        "description": "seconds between reconnect attempts", "range": (0.05, 60.0)})
    diagnostics_period_s: float = field(default=1.0, metadata={
        "description": "periodic /diagnostics publish", "range": (0.05, 10.0)})

    def __post_init__(self) -> None:
        if self.report_type not in ("real", "rich", "normal"):
            msg = f"report_type={self.report_type!r}: expected 'real', 'rich' or 'normal'"
            raise ConfigError(msg)
        if self.velocity_duration_s < 1.5 / self.rate_hz:
            msg = (f"velocity_duration_s={self.velocity_duration_s} expires before the next "
                   f"command at rate_hz={self.rate_hz}: set it >= {1.5 / self.rate_hz:.3f} s")
            raise ConfigError(msg)


# limits.* are live; while armed each may only get stricter in this direction.
STRICTER = {"max_step_m": "lower", "max_speed_m_s": "lower", "max_accel_m_s2": "lower",
            "tracking_gain_hz": "lower", "command_timeout_s": "lower",
            "workspace_min_m": "higher", "workspace_max_m": "lower"}


class XArmNode(Node):
    """The xArm driver; ``api_factory(ip, report_type)`` builds the SDK object (tests: a double)."""

    def __init__(self, api_factory: Callable[[str, str], Any] | None = None,
                 **node_kwargs: Any) -> None:
        super().__init__("fowm_xarm", **node_kwargs)
        self.config = declare_from_dataclass(self, "", XArmNodeConfig)
        self.limits = declare_from_dataclass(self, "limits", ArmLimits, live=True)
        api = (api_factory or make_xarm_api)(self.config.robot_ip, self.config.report_type)
        self.arm = XArm(api, with_gripper=self.config.with_gripper)
        self.commander = ArmCommander(self.limits)
        self.gate = ArmGate()
        self.joint_names = [f"joint{i + 1}" for i in range(self.config.dof)]
        if self.config.with_gripper:
            self.joint_names.append(topics.GRIPPER_JOINT)
        self.counts = {"rejected_actions": 0, "clamped_actions": 0, "ignored_disarmed": 0,
                       "reconnect_attempts": 0, "tick_errors": 0, "conflict_holds": 0}
        self.inputs = InputGuard(self)           # no payload or tick error stops the driver
        self._ee_m = np.full(3, np.nan)
        self._gripper_pulse: float | None = None
        self._gripper_sent: float | None = None
        self._gripper_target: float | None = None
        self._next_gripper_poll = 0.0
        self._next_reconnect = 0.0
        self._last_tick = time.monotonic()
        self._hold = HoldReason.NO_COMMAND
        self.diag = DiagnosticsReporter(self, "fowm_xarm: arm", self.config.robot_ip)
        watch_live(self, LiveGroup("limits", lambda: self.limits, self._apply_limits, only_tighter(
            STRICTER, "the armed xArm", "disarm it with ~/estop first (or restart the node)",
            unless=lambda: not self.gate.is_armed)))
        self.joint_pub = self.create_publisher(JointState, topics.JOINT_STATES, qos.SENSOR_PUB)
        self.pose_pub = self.create_publisher(PoseStamped, topics.EE_POSE, qos.SENSOR_PUB)
        guard = self.inputs.guard
        self.create_subscription(JointState, topics.ACTION, guard(topics.ACTION, self._on_action),
                                 qos.COMMAND)
        self.create_service(Trigger, "~/estop", self.inputs.service("~/estop", self._on_estop))
        self.create_service(Trigger, "~/rearm", self.inputs.service("~/rearm", self._on_rearm))
        self.create_timer(1.0 / self.config.rate_hz, guard("control tick", self._guarded_tick))
        self.create_timer(self.config.diagnostics_period_s,
                          guard("diagnostics timer", self._publish_diagnostics))

    def _apply_limits(self, limits: ArmLimits) -> None:
        # Parameter services run on the executor thread, as the control timer: no race.
        self.limits = self.commander.limits = limits

    # --- control tick ----------------------------------------------------------------------
    def _guarded_tick(self) -> None:
        try:
            self._tick()
        except Exception as err:  # nothing new is sent: the last command expires on the arm
            self.counts["tick_errors"] += 1
            self.commander.reset()
            self._gripper_target = None
            self.inputs.refuse("control tick", f"{type(err).__name__}: {err}")
            self.diag.update(ERROR, f"control tick failed ({type(err).__name__}: {err}); "
                             "holding", gate=self.gate.state, **self.counts)

    def _tick(self) -> None:
        now = time.monotonic()
        dt, self._last_tick = now - self._last_tick, now
        if not self.arm.is_connected:
            self._on_link_down(now)
            return
        if self.gate.state is GateState.DISCONNECTED:
            self.gate.on_connected()
        reading = self.arm.read()
        self._ee_m = reading.ee_position_m
        self._poll_gripper(now)
        self._publish_state(reading)
        if reading.error_code != 0 and self.gate.is_armed:
            self._fault(reading.error_code, f"controller error {reading.error_code} while armed")
        if self.gate.is_armed and self.count_publishers(topics.ACTION) > 1:
            # Two controllers on one arm (fowm.ros.publishers): drop what was set, hold.
            self.counts["conflict_holds"] += 1
            self.commander.reset()
            self._gripper_target = None
        if self.gate.is_armed:
            # The command timeout is judged on the clock right before sending, not the tick's
            # start: reading the arm and publishing its state take time (ms over TCP).
            self._command(reading, time.monotonic(), dt)
        self._update_diagnostics(reading)

    def _command(self, reading: XArmReading, now: float, dt: float) -> None:
        cmd = self.commander.tick(reading.ee_position_m, now, dt)
        self._hold = cmd.hold
        code = self.arm.send_velocity(cmd.velocity_m_s, self.config.velocity_duration_s)
        if code != 0:
            self._fault(code, f"velocity command refused with code {code}")
            return
        target, sent = self._gripper_target, self._gripper_sent
        is_new = target is not None and (
            sent is None or abs(target - sent) > self.config.gripper_deadband)
        if is_new and self.arm.set_gripper(target) == 0:
            self._gripper_sent = target

    def _fault(self, code: int, why: str) -> None:
        """Stop sending: the controller already stopped itself; re-arming is the operator's call."""
        self.gate.on_error(code)
        self.commander.reset()
        self._gripper_target = None
        self.get_logger().error(f"{why}; disarmed, call ~/rearm to clean the error and re-arm")

    def _on_link_down(self, now: float) -> None:
        if self.gate.state is not GateState.DISCONNECTED:
            self.gate.on_disconnected()
            self.commander.reset()
            self._gripper_target = None
            self._next_reconnect = now + self.config.reconnect_period_s
            self.get_logger().error("lost the link to the xArm; disarmed, retrying")
        self.diag.update(ERROR, "disconnected", gate=self.gate.state,
                         last_error=self.arm.last_error, **self.counts)
        if now < self._next_reconnect:
            return
        self._next_reconnect = now + self.config.reconnect_period_s
        self.counts["reconnect_attempts"] += 1
        if self.arm.connect():
            self.gate.on_connected()   # DISARMED: never resumes motion by itself
            self.get_logger().warning("xArm link up; disarmed until ~/rearm")

    def _poll_gripper(self, now: float) -> None:
        if self.config.with_gripper and now >= self._next_gripper_poll:
            self._next_gripper_poll = now + 1.0 / self.config.gripper_poll_hz
            self._gripper_pulse = self.arm.read_gripper_pulse()

    # --- publishing ------------------------------------------------------------------------
    def _publish_state(self, reading: XArmReading) -> None:
        stamp = self.get_clock().now().to_msg()
        positions = list(reading.joint_positions_rad[: self.config.dof])
        if self.config.with_gripper:
            pulse = self._gripper_pulse
            positions.append(float("nan") if pulse is None else gripper_joint_rad(pulse))
        joints = JointState(name=self.joint_names, position=positions)
        joints.header.stamp = stamp
        self.joint_pub.publish(joints)
        pose = PoseStamped()
        pose.header.stamp = stamp
        pose.header.frame_id = topics.BASE_FRAME
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = (
            float(v) for v in reading.ee_position_m)
        q = quaternion_from_rpy(*(float(v) for v in reading.ee_rpy_rad))
        o = pose.pose.orientation
        o.x, o.y, o.z, o.w = q
        self.pose_pub.publish(pose)

    def _update_diagnostics(self, reading: XArmReading) -> None:
        values = {"gate": self.gate.state, "hold": self._hold, "state": reading.state,
                  "mode": reading.mode, "error_code": reading.error_code,
                  "warn_code": reading.warn_code, **self.counts, **self.inputs.values()}
        if reading.error_code != 0:
            level, message = ERROR, f"controller error {reading.error_code}"
        elif self.gate.state is GateState.FAULT:
            level, message = ERROR, f"fault (code {self.gate.fault_code}); call ~/rearm"
        elif self.gate.state is GateState.ESTOPPED:
            level, message = WARN, "e-stopped; call ~/rearm"
        elif self.gate.is_armed and self.count_publishers(topics.ACTION) > 1:
            level, message = ERROR, "another publisher on /fowm/action: holding (two controllers)"
        elif self._hold in (HoldReason.NON_FINITE, HoldReason.BAD_NAMES) and self.gate.is_armed:
            level, message = WARN, f"holding: {self._hold} action"
        elif reading.warn_code != 0:
            level, message = WARN, f"controller warning {reading.warn_code}"
        elif self.config.with_gripper and self._gripper_pulse is None:
            level, message = WARN, "gripper position unknown"
        else:
            level, message = OK, f"{self.gate.state}"
        self.diag.update(level, message, **values)

    def _publish_diagnostics(self) -> None:
        self.diag.publish()

    # --- inputs ----------------------------------------------------------------------------
    def _on_action(self, msg: JointState) -> None:
        if not self.gate.is_armed:
            # Dropped, not stored: after a re-arm nothing old may resume.
            self.counts["ignored_disarmed"] += 1
            return
        if self.inputs.future(topics.ACTION, stamp_ns(msg)):
            return
        verdict = self.commander.set_action(msg.name, msg.position, self._ee_m, time.monotonic())
        if not verdict.accepted:
            self._hold = verdict.reason
            self.counts["rejected_actions"] += 1
            self.get_logger().warning(f"holding: {verdict.detail}", throttle_duration_sec=1.0)
            return
        self._hold = HoldReason.NONE
        self.counts["clamped_actions"] += int(verdict.was_clamped)
        self._gripper_target = verdict.gripper_closure

    def _on_estop(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.commander.reset()
        self._gripper_target = None
        if not self.arm.is_connected:
            response.success = False
            response.message = "xArm not connected: it cannot be reached; use the hardware e-stop"
            return response
        code = self.arm.estop(self.config.velocity_duration_s)
        self.gate.on_estop()
        response.success = code == 0
        response.message = "stopped (state 4); call ~/rearm to move again" if code == 0 else (
            f"set_state(4) returned {code}; use the hardware e-stop")
        self.get_logger().warning(f"e-stop requested: {response.message}")
        return response

    def _on_rearm(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        ok, why = self.gate.can_arm()
        if not ok:
            response.success, response.message = False, why
            return response
        self.commander.reset()
        self._gripper_target = None
        self._gripper_sent = None
        code, step = self.arm.arm()
        if code != 0 or self.arm.read().error_code != 0:
            self.gate.arm_failed(code)
            response.success = False
            response.message = (f"re-arm failed at {step} with code {code} (controller error "
                                f"{self.arm.read().error_code}); check the arm, then retry")
        else:
            self.gate.arm_succeeded()
            response.success, response.message = True, "armed: mode 5, ready"
        self.get_logger().info(f"re-arm requested: {response.message}")
        return response

    def destroy_node(self) -> None:
        # docs/platform.md §12: on exit zero velocity and state 4, so nothing outlives the node.
        arm = getattr(self, "arm", None)      # None when __init__ failed on a parameter
        if arm is not None and arm.is_connected:
            if self.gate.is_armed:
                arm.estop(self.config.velocity_duration_s)
            arm.disconnect()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    """Console script `ros2 run fowm xarm_node`: this node until SIGINT/SIGTERM."""
    run_nodes([XArmNode], args)


if __name__ == "__main__":
    main()
