"""No payload stops a driver node: every subscription, timer and service callback of every node is
made by fowm.ros.guard (an exception is refused and reported, never ends the executor's spin),
and the fault suite (benchmarks/fault_nodes.py) has faults for every subscription it finds.
Then the camera, xArm and sim drivers, each under the faults that once stopped them."""

from __future__ import annotations

import ast
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from doubles.realsense_double import SoftwareCamera
from doubles.xarm_double import XArmDouble
from fowm.nodes.calibration_node import CalibrationNode
from fowm.nodes.camera_node import CameraNode
from fowm.nodes.episode_manager import EpisodeManagerNode
from fowm.nodes.learner_link import LearnerLinkNode
from fowm.nodes.planner_node import PlannerNode
from fowm.nodes.recorder_node import RecorderNode
from fowm.nodes.robot_link import RobotLinkNode
from fowm.nodes.sim_node import SimNode
from fowm.nodes.tracker_node import TrackerNode
from fowm.nodes.xarm_node import XArmNode
from fowm.ros import qos
from fowm.ros.transfer import WeightsShipper
from helpers.stack import tiny_checkpoint
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from benchmarks import fault_inputs, fault_nodes, fault_rigs
from fowm_core.contract import topics
from fowm_core.perception import geometry

NODES_DIR = Path(fault_nodes.__file__).resolve().parents[1] / "ros2_ws/src/fowm/fowm/nodes"


def _p(**values: object) -> list[Parameter]:
    return [Parameter(k, value=v) for k, v in values.items()]


def _xarm() -> tuple[XArmNode, XArmDouble]:
    arm = XArmDouble("10.0.0.1", is_radian=True, do_not_open=True)
    return XArmNode(api_factory=lambda ip, rt: arm, parameter_overrides=_p(
        rate_hz=50.0, with_gripper=False, reconnect_period_s=0.1)), arm


def test_every_callback_is_guarded_and_every_subscription_has_its_faults(
        ros: None, tmp_path: Path) -> None:
    rgb = tiny_checkpoint(tmp_path / "rgb.safetensors")
    state = fault_rigs.state_checkpoint(tmp_path / "state.safetensors")
    nodes = [PlannerNode(parameter_overrides=_p(checkpoint=str(rgb))),
             PlannerNode(parameter_overrides=_p(checkpoint=str(state))),
             EpisodeManagerNode(parameter_overrides=_p(checkpoint=str(rgb))),
             RecorderNode(parameter_overrides=_p(bag_dir=str(tmp_path / "bags"))),
             SimNode(parameter_overrides=_p(checkpoint=str(rgb))), _xarm()[0],
             CameraNode(source_factory=SoftwareCamera),
             TrackerNode(parameter_overrides=_p(task="push", extrinsics_file=str(
                 geometry.save_extrinsics(tmp_path / "cam.yaml", np.eye(4))))),
             CalibrationNode(parameter_overrides=_p(out_file=str(tmp_path / "cal.yaml"))),
             RobotLinkNode(parameter_overrides=_p(bag_dir=str(tmp_path / "rb"),
                                                  store_dir=str(tmp_path / "store"))),
             LearnerLinkNode(parameter_overrides=_p(bag_dir=str(tmp_path / "lb"))),
             Node("fowm_learner")]
    shipper = WeightsShipper(nodes[-1])     # the learner's subscriptions with weights_link
    try:
        for node in nodes:
            assert fault_nodes.unguarded(node) == [], node.get_name()
            for topic, msg_type in fault_nodes.subscriptions(node):
                faults = fault_inputs.faults_for(topic, msg_type)
                assert sorted(faults) == sorted(fault_inputs.CLASSES), (node.get_name(), topic)
        subs = [[t for t, _ in fault_nodes.subscriptions(n)] for n in nodes]
        assert topics.COLOR_IMAGE in subs[0] and topics.OBJECT_POSE in subs[1]   # two planners
        assert subs[6] == []                     # the camera: its rows fault the device instead
        assert topics.COLOR_INFO in subs[7] and topics.EE_POSE in subs[8]
        assert topics.WEIGHTS_BLOB in subs[9] and topics.EPISODE_BLOB in subs[10]
        assert sorted(subs[11]) == [topics.LINK, topics.TRANSFER_PROGRESS]
    finally:
        shipper.sender.close()
        for node in nodes:
            node.destroy_node()


def node_modules(folder: Path = NODES_DIR) -> list[str]:
    """Modules of fowm/nodes that make a node, whatever their file name: a class deriving from
    Node, or a subscription or node made some other way."""
    found = []
    for path in sorted(folder.glob("*.py")):
        text = path.read_text()
        classes = [n for n in ast.walk(ast.parse(text)) if isinstance(n, ast.ClassDef)]
        bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "")
                 for c in classes for b in c.bases}
        if "Node" in bases or any(w in text for w in ("create_subscription", "create_node(")):
            found.append(path.stem)
    return found


def test_the_suite_has_a_rig_for_every_node_that_subscribes() -> None:
    modules = node_modules()
    assert {"planner_node", "learner_node", "tracker_node", "calibration_node", "robot_link",
            "learner_link"} <= set(modules)
    missing = sorted(set(modules) - set(fault_nodes.NODE_MODULES))
    assert missing == [], (f"nodes/{missing} make nodes the fault suite does not know: add a "
                           "rig (benchmarks/fault_rigs*.py) and an entry in "
                           "fault_nodes.NODE_MODULES")
    groups = {g for g, _ in fault_nodes.RIGS} | {"camera"}
    for module, covered in fault_nodes.NODE_MODULES.items():
        assert set(covered) <= groups, module
        if not covered:     # publishes only: nothing that subscribes, nor any helper it uses
            text = (NODES_DIR / f"{module}.py").read_text()
            helpers = [NODES_DIR.parent / "ros" / f"{m}.py"
                       for m in re.findall(r"from fowm\.ros\.(\w+) import", text)]
            assert "subscri" not in text.lower(), module
            assert not [h.name for h in helpers if "create_subscription" in h.read_text()], module


def test_node_modules_are_found_by_what_they_make_not_by_file_name(tmp_path: Path) -> None:
    (tmp_path / "robot_link.py").write_text(
        "from rclpy.node import Node\nclass RobotLink(Node):\n    pass\n")
    (tmp_path / "helpers.py").write_text("def f():\n    return node.create_subscription(1)\n")
    (tmp_path / "plain.py").write_text("class Frame:\n    pass\n")
    assert node_modules(tmp_path) == ["helpers", "robot_link"]


def test_link_json_that_cannot_be_read_is_refused_and_counted(ros: None, tmp_path: Path) -> None:
    node = RobotLinkNode(parameter_overrides=_p(bag_dir=str(tmp_path / "b"),
                                                store_dir=str(tmp_path / "s")))
    try:
        for sub in node.subscriptions:
            if sub.msg_type is String:
                sub.callback(String(data="[]"))
        assert node.inputs.refused == {topics.EPISODE_ACK: 1, topics.LINK: 1,
                                       topics.TRANSFER_PROGRESS: 1}
    finally:
        node.destroy_node()


# -- the sim twin ----------------------------------------------------------------------------------
def test_sim_refuses_hostile_actions_holds_on_a_failing_tick_and_restarts_its_loop(
        executor: SingleThreadedExecutor, spin_until, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    sim = SimNode(parameter_overrides=_p(
        checkpoint=str(tiny_checkpoint(tmp_path / "c.safetensors"))))
    helper = Node("sim_guard_helper")
    pub = helper.create_publisher(JointState, topics.ACTION, qos.COMMAND)
    for node in (sim, helper):
        executor.add_node(node)
    assert spin_until(lambda: sim.steps >= 2, timeout_s=30)
    ahead = fault_inputs.action(sim.get_clock().now().nanoseconds + 3600 * 10**9)
    pub.publish(fault_inputs.GARBAGE_CDR)                 # dropped by the middleware
    pub.publish(JointState(name=["x"], position=[1.0]))   # depth 1: one at a time
    assert spin_until(lambda: sim.inputs.refused.get(topics.ACTION, 0) == 1, timeout_s=10)
    pub.publish(ahead)
    assert spin_until(lambda: sim.inputs.future_stamps == 1, timeout_s=10)
    # A tick that raises something the twin does not expect: hold until ~/reset, loop goes on.
    monkeypatch.setattr(sim, "_publish_observation", _raise_once(sim._publish_observation))
    assert spin_until(lambda: bool(sim.twin_error), timeout_s=10)
    assert sim.loop.is_running and "RuntimeError" in sim.twin_error
    steps = sim.steps
    sim.loop.stop()                                       # as if its thread had died anyway
    assert spin_until(lambda: sim.loop_restarts == 1 and sim.loop.is_running, timeout_s=10)
    reset = helper.create_client(Trigger, "/fowm_sim/reset")
    future = reset.call_async(Trigger.Request())
    assert spin_until(future.done, timeout_s=30) and future.result().success
    assert spin_until(lambda: sim.steps > 0 and sim.steps != steps, timeout_s=30)
    assert not sim.twin_error


def _raise_once(fn):
    calls = [0]

    def wrapped(*args):
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("unexpected twin failure")
        return fn(*args)
    return wrapped


# -- the xArm driver --------------------------------------------------------------------------
def test_xarm_survives_a_failing_tick_refuses_future_actions_and_holds_for_two_controllers(
        executor: SingleThreadedExecutor, spin_until, monkeypatch: pytest.MonkeyPatch) -> None:
    node, arm = _xarm()
    helper = Node("xarm_guard_helper")
    pub = helper.create_publisher(JointState, topics.ACTION, qos.COMMAND)
    for n in (node, helper):
        executor.add_node(n)
    assert spin_until(lambda: node.arm.is_connected, timeout_s=10)
    assert node._on_rearm(None, Trigger.Response()).success
    read = node.arm.read
    monkeypatch.setattr(node.arm, "read", _raise_once(read))
    assert spin_until(lambda: node.counts["tick_errors"] == 1, timeout_s=10)
    sent = len(arm.sim_commands)
    assert spin_until(lambda: len(arm.sim_commands) > sent + 5, timeout_s=10)   # ticks go on
    pub.publish(fault_inputs.action(node.get_clock().now().nanoseconds + 3600 * 10**9))
    assert spin_until(lambda: node.inputs.future_stamps == 1, timeout_s=10)
    moving = lambda: [c for c in arm.sim_commands[-5:] if any(c[1][:3])]  # noqa: E731
    assert spin_until(lambda: not moving(), timeout_s=5)        # the future one never moved it
    other = helper.create_publisher(JointState, topics.ACTION, qos.COMMAND)
    assert spin_until(lambda: node.count_publishers(topics.ACTION) == 2, timeout_s=10)
    held = node.counts["conflict_holds"]
    assert spin_until(lambda: node.counts["conflict_holds"] > held + 5,
                      every=lambda: other.publish(fault_inputs.action(0, (1.0, 0, 0, 0))))
    assert not [c for c in arm.sim_commands[-5:] if any(c[1][:3])]
    assert all(math.isfinite(v) for c in arm.sim_commands for v in c[1])
    helper.destroy_publisher(other)
    assert spin_until(lambda: node.count_publishers(topics.ACTION) == 1, timeout_s=10)
    assert spin_until(lambda: bool(moving()), timeout_s=10,
                      every=lambda: pub.publish(fault_inputs.action(0, (1.0, 0, 0, 0))))


# -- the camera ------------------------------------------------------------------------------------
def test_camera_refuses_an_unconvertible_frame_and_restarts_a_dead_capture_thread(
        executor: SingleThreadedExecutor, spin_until) -> None:
    cams: list[SoftwareCamera] = []
    node = CameraNode(source_factory=lambda cfg: cams.append(SoftwareCamera(cfg)) or cams[-1],
                      parameter_overrides=_p(width=64, height=48, fps=30))
    viewer = Node("camera_guard_viewer")
    images: list[Image] = []
    viewer.create_subscription(Image, topics.COLOR_IMAGE, images.append, qos.SENSOR_PUB)
    for n in (node, viewer):
        executor.add_node(n)
    frame = np.full((48, 64, 3), 7, np.uint8)
    push = lambda: cams[-1].push(frame)  # noqa: E731
    assert spin_until(lambda: len(images) >= 2, timeout_s=20, every=push)
    node._publish = _raise_once(node._publish)
    n = len(images)
    assert spin_until(lambda: node.inputs.refused.get("frames") == 1 and len(images) > n + 1,
                      timeout_s=20, every=push)
    read = node.camera.read

    def broken(timeout_s: float):
        node.camera.read = read
        raise ValueError("driver bug")
    node.camera.read = broken
    n = len(images)
    assert spin_until(lambda: node._thread.restarts == 1 and len(images) > n + 1,
                      timeout_s=20, every=push)
    assert node._thread.is_alive()
    assert json.loads(node.inputs.values()["rejected_by_topic"]) == {"frames": 1}
