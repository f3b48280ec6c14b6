"""fowm_calibration on real rclpy, fed by the twin as an operator would move the real arm: at each
pose an image, its CameraInfo and the measured /xarm/ee_pose; ~/capture pairs them, ~/solve writes
the extrinsics, which land near the twin's true camera pose."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from fowm.nodes.calibration_node import CalibrationNode
from fowm.ros import qos
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image
from std_srvs.srv import Trigger

from fowm_core.contract import topics
from fowm_core.data import convert
from fowm_core.errors import ConfigError
from fowm_core.perception import calibration, geometry
from fowm_core.sim import XarmEnv
from fowm_core.sim.markers import TRACKER_CAMERA
from fowm_core.sim.scene import GRIPPER_QUAT

W, H = 640, 480


class Operator:
    """Moves the twin's arm and publishes what the camera and the arm driver would."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.image_pub = node.create_publisher(Image, topics.COLOR_IMAGE, qos.SENSOR_PUB)
        self.info_pub = node.create_publisher(CameraInfo, topics.COLOR_INFO, qos.SENSOR_PUB)
        self.pose_pub = node.create_publisher(PoseStamped, topics.EE_POSE, qos.SENSOR_PUB)
        self.capture = node.create_client(Trigger, "/fowm_calibration/capture")
        self.solve = node.create_client(Trigger, "/fowm_calibration/solve")

    def publish(self, rgb: np.ndarray, intr: geometry.Intrinsics, position: np.ndarray,
                quat_wxyz: np.ndarray, stamp: int, pose_stamp: int | None = None) -> None:
        t = convert.to_time(stamp, type(PoseStamped().header.stamp))
        info = CameraInfo(width=W, height=H, k=[float(v) for v in intr.matrix().reshape(-1)],
                          d=[0.0] * 5, distortion_model="plumb_bob")
        info.header.stamp = t
        image = Image(height=H, width=W, encoding="rgb8", step=3 * W, data=rgb.tobytes())
        image.header.stamp = t
        pose = PoseStamped()
        pose.header.stamp = convert.to_time(stamp if pose_stamp is None else pose_stamp, type(t))
        pose.header.frame_id = topics.BASE_FRAME
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = map(float, position)
        o = pose.pose.orientation
        o.w, o.x, o.y, o.z = map(float, quat_wxyz)
        self.pose_pub.publish(pose)
        self.info_pub.publish(info)
        self.image_pub.publish(image)


def _call(spin_until, client, node: CalibrationNode, until) -> Trigger.Response:
    assert spin_until(client.service_is_ready)
    assert spin_until(until, timeout_s=5)
    future = client.call_async(Trigger.Request())
    assert spin_until(future.done, timeout_s=30)
    return future.result()


@pytest.fixture
def rig(executor, tmp_path: Path):
    node = CalibrationNode(parameter_overrides=[
        Parameter("out_file", value=str(tmp_path / "camera.yaml"))])
    helper = Node("calibration_operator")
    executor.add_node(node)
    executor.add_node(helper)
    env = XarmEnv("reach", "state", gripper_marker=TRACKER_CAMERA)
    env.reset(seed=0)
    yield node, Operator(helper), env
    env.close()


def test_capture_and_solve_find_the_camera(rig, spin_until, tmp_path: Path) -> None:
    node, operator, env = rig
    intr = env.camera_intrinsics(W, H, TRACKER_CAMERA)
    captured = refused = 0
    for i, (position, quat) in enumerate(calibration.poses(
            np.array(env.workspace.low), np.array(env.workspace.high), 20, GRIPPER_QUAT,
            30.0, 40.0, seed=1)):
        env.hold_tool(position, quat)
        stamp = node.get_clock().now().nanoseconds
        p, q = env.eef_pose()
        operator.publish(env.render(W, H, TRACKER_CAMERA), intr, p, q, stamp)
        reply = _call(spin_until, operator.capture, node, lambda s=stamp: (
            node._image is not None and convert.stamp_ns(node._image) == s
            and any(ps == s for ps, _ in node._poses)))
        captured += reply.success
        refused += not reply.success
        assert reply.success or "not found" in reply.message, (i, reply.message)
    assert captured >= 8 and len(node.base_gripper) == captured
    reply = _call(spin_until, operator.solve, node, lambda: True)
    assert reply.success, reply.message
    summary = json.loads(reply.message)
    assert summary["samples"] == captured and summary["residual_mm"] < 10
    mm, deg = geometry.pose_error(geometry.load_extrinsics(tmp_path / "camera.yaml"),
                                  env.camera_pose(TRACKER_CAMERA))
    assert mm < 15 and deg < 1.0, (mm, deg)


def test_captures_it_cannot_use_are_refused(rig, spin_until) -> None:
    node, operator, env = rig
    reply = _call(spin_until, operator.capture, node, lambda: True)
    assert not reply.success and "no image" in reply.message
    intr = env.camera_intrinsics(W, H, TRACKER_CAMERA)
    p, q = env.eef_pose()
    stamp = node.get_clock().now().nanoseconds
    # The arm's pose half a second away from the image: not a pair.
    operator.publish(env.render(W, H, TRACKER_CAMERA), intr, p, q, stamp, stamp - 500_000_000)
    reply = _call(spin_until, operator.capture, node, lambda: node._image is not None
                  and convert.stamp_ns(node._image) == stamp and node._poses)
    assert not reply.success and "0.500 s" in reply.message
    stamp += 1_000_000
    operator.publish(np.full((H, W, 3), 200, np.uint8), intr, p, q, stamp)
    reply = _call(spin_until, operator.capture, node, lambda: convert.stamp_ns(
        node._image) == stamp)
    assert not reply.success and "not found" in reply.message
    reply = _call(spin_until, operator.solve, node, lambda: True)
    assert not reply.success and "at least" in reply.message
    assert node.base_gripper == []


def test_faulted_inputs_give_no_sample(rig, spin_until) -> None:
    node, operator, env = rig
    intr = env.camera_intrinsics(W, H, TRACKER_CAMERA)
    rgb = env.render(W, H, TRACKER_CAMERA)
    p, q = env.eef_pose()
    stale = node.get_clock().now().nanoseconds - 10 * 10**9    # paired with a pose as old
    operator.publish(rgb, intr, p, q, stale)
    reply = _call(spin_until, operator.capture, node, lambda: node._image is not None
                  and convert.stamp_ns(node._image) == stale and node._poses)
    assert not reply.success and "10.0" in reply.message and "s old" in reply.message
    operator.publish(rgb, intr, np.array([math.nan, 0.0, 0.3]), q,
                     node.get_clock().now().nanoseconds)
    assert spin_until(lambda: node.inputs.refused.get(topics.EE_POSE, 0) == 1)
    other = operator.node.create_publisher(PoseStamped, topics.EE_POSE, qos.SENSOR_PUB)
    stamp = node.get_clock().now().nanoseconds
    operator.publish(rgb, intr, p, q, stamp)
    reply = _call(spin_until, operator.capture, node, lambda: (
        node.count_publishers(topics.EE_POSE) == 2 and convert.stamp_ns(node._image) == stamp
        and any(s == stamp for s, _ in node._poses)))
    assert not reply.success and "more than one publisher" in reply.message
    operator.node.destroy_publisher(other)
    assert node.base_gripper == [] and node.sample_stamps == []


def test_refuses_to_start_without_an_output_file(ros: None) -> None:
    with pytest.raises(ConfigError, match="out_file"):
        CalibrationNode()
    with pytest.raises(ConfigError, match="method"):
        CalibrationNode(parameter_overrides=[Parameter("out_file", value="/tmp/x.yaml"),
                                             Parameter("method", value="guess")])
