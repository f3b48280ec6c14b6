"""fowm_xarm on real rclpy with the SDK double: topics, arming, faults, reconnects, e-stop."""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from doubles.xarm_double import XArmDouble
from fowm.hardware.xarm import XArm, gripper_joint_rad
from fowm.nodes.xarm_node import XArmNode
from fowm.ros import qos
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from std_srvs.srv import Trigger

from fowm_core.contract import topics
from fowm_core.errors import ConfigError
from fowm_core.runtime.arm import GateState, HoldReason


def test_double_matches_the_real_sdk_signatures() -> None:
    from xarm.wrapper import XArmAPI

    public = [n for n in vars(XArmDouble) if not n.startswith(("_", "sim_"))]
    assert {"connect", "vc_set_cartesian_velocity", "set_state", "position"} <= set(public)
    for name in public:
        real = inspect.getattr_static(XArmAPI, name, None)
        assert real is not None, f"XArmAPI has no {name}: the double invents an API"
        ours = inspect.getattr_static(XArmDouble, name)
        if isinstance(ours, property):
            assert isinstance(real, property), f"{name} is a property only in the double"
            continue
        real_params = list(inspect.signature(real).parameters.values())
        our_params = list(inspect.signature(ours).parameters.values())
        assert [(p.name, p.kind, p.default) for p in our_params] == \
               [(p.name, p.kind, p.default) for p in real_params], name
    init = inspect.signature(XArmDouble.__init__).parameters
    assert list(init) == list(inspect.signature(XArmAPI.__init__).parameters)


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_double_follows_the_controller_rules() -> None:
    clock = FakeClock()
    arm = XArmDouble("10.0.0.1", is_radian=True, do_not_open=True, clock=clock)
    assert arm.vc_set_cartesian_velocity([10, 0, 0, 0, 0, 0], duration=0.1) == -1  # no link
    arm.connect()
    assert arm.vc_set_cartesian_velocity([10, 0, 0, 0, 0, 0], duration=0.1) != 0   # not armed
    adapter = XArm(arm)
    assert adapter.arm() == (0, "")
    assert (arm.mode, arm.state) == (5, 2)
    # Timed velocity: 100 mm/s for 0.1 s moves 10 mm, then the firmware watchdog stops it.
    assert adapter.send_velocity(np.array([0.1, 0.0, 0.0]), duration_s=0.1) == 0
    clock.t += 0.05
    assert arm.position[0] == pytest.approx(405.0) and arm.state == 1
    clock.t += 1.0
    assert arm.position[0] == pytest.approx(410.0) and arm.state == 2
    # An error mid-motion stops it and drops to mode 0 / state 4; cleaning alone does not re-arm.
    adapter.send_velocity(np.array([0.1, 0.0, 0.0]), duration_s=1.0)
    clock.t += 0.1
    arm.sim_inject_error(31)
    clock.t += 0.5
    assert arm.position[0] == pytest.approx(420.0)
    assert (arm.mode, arm.state, arm.error_code) == (0, 4, 31)
    assert adapter.send_velocity(np.array([0.1, 0.0, 0.0]), 0.1) != 0
    arm.clean_error()
    assert adapter.send_velocity(np.array([0.1, 0.0, 0.0]), 0.1) != 0
    assert adapter.arm() == (0, "")
    assert adapter.send_velocity(np.array([0.1, 0.0, 0.0]), 0.1) == 0
    # Gripper: closure 1 = 0 pulses = drive_joint 0.85 rad (xarm_ros2's convention).
    assert adapter.set_gripper(1.0) == 0
    assert gripper_joint_rad(adapter.read_gripper_pulse()) == pytest.approx(0.85)


@dataclass
class Rig:
    """The node under test, its SDK double and a client node playing planner/operator."""

    node: XArmNode
    arm: XArmDouble
    client: Node
    joints: list[JointState] = field(default_factory=list)
    poses: list[PoseStamped] = field(default_factory=list)
    diags: list[DiagnosticStatus] = field(default_factory=list)

    def __post_init__(self) -> None:
        c = self.client
        self.action_pub = c.create_publisher(JointState, topics.ACTION, qos.COMMAND)
        c.create_subscription(JointState, topics.JOINT_STATES, self.joints.append, qos.SENSOR_PUB)
        c.create_subscription(PoseStamped, topics.EE_POSE, self.poses.append, qos.SENSOR_PUB)
        c.create_subscription(DiagnosticArray, topics.DIAGNOSTICS,
                              lambda m: self.diags.extend(m.status), qos.DIAGNOSTICS)
        self.estop_cli = c.create_client(Trigger, "/fowm_xarm/estop")
        self.rearm_cli = c.create_client(Trigger, "/fowm_xarm/rearm")

    def act(self, values: tuple[float, ...]) -> None:
        self.action_pub.publish(JointState(name=list(topics.ACTION_NAMES), position=list(values)))

    def x_mm(self) -> float:
        return self.arm.position[0]

    def moving_commands(self) -> int:
        return sum(1 for _, speeds, _ in self.arm.sim_commands if any(speeds[:3]))


@pytest.fixture
def make_rig(executor, spin_until):
    def make(**overrides: object) -> Rig:
        doubles: list[XArmDouble] = []

        def factory(ip: str, report_type: str) -> XArmDouble:
            doubles.append(XArmDouble(ip, is_radian=True, do_not_open=True,
                                      report_type=report_type))
            return doubles[-1]

        params = {"rate_hz": 50.0, "reconnect_period_s": 0.1, "limits.command_timeout_s": 0.3,
                  **overrides}
        node = XArmNode(api_factory=factory, parameter_overrides=[
            Parameter(k, value=v) for k, v in params.items()])
        rig = Rig(node=node, arm=doubles[0], client=Node("test_operator"))
        executor.add_node(node)
        executor.add_node(rig.client)
        assert spin_until(lambda: (rig.action_pub.get_subscription_count() > 0
                                   and rig.node.gate.state is GateState.DISARMED
                                   and len(rig.joints) > 0))
        return rig

    return make


def call(spin_until, client, timeout_s: float = 10.0) -> Trigger.Response:
    assert spin_until(client.service_is_ready)
    future = client.call_async(Trigger.Request())
    assert spin_until(future.done, timeout_s)
    return future.result()


def test_publishes_state_and_never_moves_before_rearm(make_rig, spin_until) -> None:
    rig = make_rig()
    assert spin_until(lambda: len(rig.poses) > 0 and len(rig.diags) > 0)
    joint = rig.joints[-1]
    assert list(joint.name) == [f"joint{i}" for i in range(1, 8)] + [topics.GRIPPER_JOINT]
    assert joint.position[-1] == pytest.approx(0.0)      # 850 pulses = open = 0 rad (xarm_ros2)
    pose = rig.poses[-1]
    assert pose.header.frame_id == topics.BASE_FRAME
    assert (pose.pose.position.x, pose.pose.position.z) == pytest.approx((0.4, 0.25))
    # rpy (pi, 0, 0): tool pointing down -> quaternion (1, 0, 0, 0) up to sign.
    assert abs(pose.pose.orientation.x) == pytest.approx(1.0)
    rig.act((1.0, 0.0, 0.0, 0.0))
    n = len(rig.joints)
    assert spin_until(lambda: len(rig.joints) > n + 10, every=lambda: rig.act((1.0, 0, 0, 0)))
    assert rig.arm.sim_commands == []
    assert rig.node.counts["ignored_disarmed"] > 0
    assert rig.diags[-1].level == DiagnosticStatus.OK


def test_arm_move_error_clean_move(make_rig, spin_until) -> None:
    rig = make_rig()
    response = call(spin_until, rig.rearm_cli)
    assert response.success, response.message
    assert (rig.arm.mode, rig.arm.state) == (5, 2)
    x0 = rig.x_mm()
    assert spin_until(lambda: rig.x_mm() > x0 + 5.0, every=lambda: rig.act((1.0, 0, 0, 1.0)))
    assert spin_until(lambda: rig.joints[-1].position[-1] == pytest.approx(0.85))  # closed
    # Error mid-motion: the node stops sending, reports, and does not re-arm by itself.
    rig.arm.sim_inject_error(31)
    assert spin_until(lambda: rig.node.gate.state is GateState.FAULT)
    sent = len(rig.arm.sim_commands)
    n = len(rig.joints)
    assert spin_until(lambda: len(rig.joints) > n + 15, every=lambda: rig.act((1.0, 0, 0, 0)))
    assert len(rig.arm.sim_commands) == sent
    assert rig.node.gate.state is GateState.FAULT and rig.arm.error_code == 31
    assert any(d.level == DiagnosticStatus.ERROR and "31" in d.message for d in rig.diags)
    # Clean error and re-arm on request; then it moves again.
    assert call(spin_until, rig.rearm_cli).success
    assert rig.arm.error_code == 0 and rig.node.gate.is_armed
    x1 = rig.x_mm()
    assert spin_until(lambda: rig.x_mm() > x1 + 5.0, every=lambda: rig.act((1.0, 0, 0, 0)))


def test_disconnect_then_reconnect_stays_disarmed(make_rig, spin_until) -> None:
    rig = make_rig()
    assert call(spin_until, rig.rearm_cli).success
    x0 = rig.x_mm()
    assert spin_until(lambda: rig.x_mm() > x0 + 2.0, every=lambda: rig.act((1.0, 0, 0, 0)))
    rig.arm.sim_drop_link(allow_reconnect=False)
    assert spin_until(lambda: rig.node.gate.state is GateState.DISCONNECTED)
    assert spin_until(lambda: rig.node.counts["reconnect_attempts"] >= 2)
    assert any(d.level == DiagnosticStatus.ERROR and d.message == "disconnected"
               for d in rig.diags)
    rig.arm.sim_connect_allowed = True
    assert spin_until(lambda: rig.node.gate.state is GateState.DISARMED)
    # The controller kept mode 5 / ready across the drop, yet the node sends nothing.
    assert rig.arm.mode == 5
    sent = len(rig.arm.sim_commands)
    n = len(rig.joints)
    assert spin_until(lambda: len(rig.joints) > n + 15, every=lambda: rig.act((1.0, 0, 0, 0)))
    assert len(rig.arm.sim_commands) == sent
    assert call(spin_until, rig.rearm_cli).success


def test_out_of_box_command_is_clamped(make_rig, spin_until) -> None:
    rig = make_rig(**{"limits.workspace_max_m": [0.42, 0.35, 0.26]})
    assert call(spin_until, rig.rearm_cli).success
    seen: list[list[float]] = []

    def push() -> None:
        rig.act((1.0, 0.0, 1.0, 0.0))
        seen.append(rig.arm.position[:3])

    assert spin_until(lambda: rig.x_mm() > 419.0 and rig.arm.position[2] > 259.0, every=push)
    n = len(rig.joints)
    assert spin_until(lambda: len(rig.joints) > n + 25, every=push)
    assert max(p[0] for p in seen) <= 420.0 + 1.0
    assert max(p[2] for p in seen) <= 260.0 + 1.0
    assert rig.node.counts["clamped_actions"] > 0


def test_no_command_means_stop_within_the_timeout(make_rig, spin_until) -> None:
    rig = make_rig()
    assert call(spin_until, rig.rearm_cli).success
    rig.act((1.0, 0.0, 0.0, 0.0))
    assert spin_until(lambda: rig.moving_commands() > 0)
    timeout_s = rig.node.limits.command_timeout_s
    assert spin_until(lambda: rig.node.commander.is_timed_out(rig.arm.sim_commands[-1][0])
                      and not any(rig.arm.sim_commands[-1][1]))
    last_action_s = rig.node.commander.last_action_s
    moving = [t for t, speeds, _ in rig.arm.sim_commands if any(speeds[:3])]
    stops = [t for t, speeds, _ in rig.arm.sim_commands if not any(speeds[:3])]
    assert max(moving) <= last_action_s + timeout_s       # nothing moving after the deadline
    assert any(t > last_action_s + timeout_s for t in stops)
    assert rig.arm.sim_velocity_mm_s() == [0.0, 0.0, 0.0]
    assert rig.node.commander.tick(rig.node._ee_m, last_action_s + 2 * timeout_s, 0.02).hold \
        is HoldReason.TIMEOUT
    # Every command carries the firmware watchdog.
    assert all(d == pytest.approx(0.06) for _, _, d in rig.arm.sim_commands)


def test_nan_action_holds_and_reports(make_rig, spin_until) -> None:
    rig = make_rig(**{"limits.command_timeout_s": 5.0})
    assert call(spin_until, rig.rearm_cli).success
    rig.act((1.0, 0.0, 0.0, 0.0))
    assert spin_until(lambda: rig.moving_commands() > 0)
    rig.act((math.nan, 0.0, 0.0, 0.0))
    assert spin_until(lambda: rig.node.counts["rejected_actions"] == 1)
    assert spin_until(lambda: not any(rig.arm.sim_commands[-1][1]))
    assert spin_until(lambda: any(d.level == DiagnosticStatus.WARN and "non_finite" in d.message
                                  for d in rig.diags))
    assert rig.node.gate.is_armed       # a bad action holds; it does not disarm


def test_estop_stops_and_needs_a_rearm(make_rig, spin_until) -> None:
    rig = make_rig()
    assert call(spin_until, rig.rearm_cli).success
    x0 = rig.x_mm()
    assert spin_until(lambda: rig.x_mm() > x0 + 2.0, every=lambda: rig.act((1.0, 0, 0, 0)))
    response = call(spin_until, rig.estop_cli)
    assert response.success, response.message
    assert rig.arm.state == 4 and rig.arm.sim_velocity_mm_s() == [0.0, 0.0, 0.0]
    assert rig.node.gate.state is GateState.ESTOPPED
    sent = len(rig.arm.sim_commands)
    n = len(rig.joints)
    assert spin_until(lambda: len(rig.joints) > n + 10, every=lambda: rig.act((1.0, 0, 0, 0)))
    assert len(rig.arm.sim_commands) == sent
    assert call(spin_until, rig.rearm_cli).success
    x1 = rig.x_mm()
    assert spin_until(lambda: rig.x_mm() > x1 + 2.0, every=lambda: rig.act((1.0, 0, 0, 0)))


def test_old_firmware_refuses_to_arm(make_rig, spin_until) -> None:
    rig = make_rig()
    rig.arm.sim_firmware = (1, 7, 9)
    response = call(spin_until, rig.rearm_cli)
    assert not response.success and "1.8.0" in response.message
    assert rig.arm.sim_commands == []


@pytest.mark.parametrize(("name", "value", "needle"), [
    ("limits.max_step_m", 5.0, "limits.max_step_m"),
    ("rate_hz", 10.0, "rate_hz"),
    ("velocity_duration_s", 0.02, "velocity_duration_s"),
    ("limits.workspace_min_m", [0.9, 0.0, 0.0], "workspace_min_m"),
])
def test_bad_parameters_fail_at_startup_naming_the_value(ros, name, value, needle) -> None:
    with pytest.raises(ConfigError) as err:
        XArmNode(api_factory=lambda ip, rt: XArmDouble(ip, do_not_open=True),
                 parameter_overrides=[Parameter(name, value=value)])
    assert needle in str(err.value)


def test_every_limit_has_a_stricter_direction() -> None:
    import dataclasses

    from fowm.nodes.xarm_node import STRICTER

    from fowm_core.runtime.arm import ArmLimits

    assert set(STRICTER) == {f.name for f in dataclasses.fields(ArmLimits)}


def test_limits_apply_live_but_only_tighter_while_armed(make_rig, spin_until) -> None:
    rig = make_rig()
    node = rig.node
    # Disarmed: any valid value applies (and reaches the commander that bounds the velocity).
    assert node.set_parameters([Parameter("limits.max_speed_m_s", value=0.5)])[0].successful
    assert node.commander.limits.max_speed_m_s == 0.5
    assert call(spin_until, rig.rearm_cli).success and node.gate.is_armed
    tighter = node.set_parameters([Parameter("limits.max_speed_m_s", value=0.1)])[0]
    assert tighter.successful and node.commander.limits.max_speed_m_s == 0.1
    for name, value in (("limits.max_speed_m_s", 0.2),
                        ("limits.workspace_max_m", [0.7, 0.35, 0.5])):
        looser = node.set_parameters([Parameter(name, value=value)])[0]
        assert not looser.successful and "~/estop" in looser.reason, looser.reason
    assert node.commander.limits.max_speed_m_s == 0.1
    assert node.get_parameter("limits.max_speed_m_s").value == 0.1
    assert not node.set_parameters([Parameter("rate_hz", value=60.0)])[0].successful  # read-only
