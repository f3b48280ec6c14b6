"""The twin in tracker mode (fowm_sim markers: true, camera: tracker_cam, privileged_poses:
false) with fowm_tracker: the simulator's object/goal topics go quiet and the tracker's poses,
stamped with the twin's stamps, take their place."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fowm.nodes.sim_node import SimNode
from fowm.nodes.tracker_node import TrackerNode
from geometry_msgs.msg import PoseStamped
from helpers.stack import Recorder, stamp_ns
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from fowm_core.contract import topics
from fowm_core.data import convert
from fowm_core.errors import ConfigError
from fowm_core.perception import geometry
from fowm_core.sim import make_env
from fowm_core.sim.markers import TRACKER_CAMERA

COLLECT = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)


def _node(cls: type[Node], **params: object) -> Node:
    return cls(parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])


def test_tracker_replaces_the_privileged_poses(executor: SingleThreadedExecutor,
                                               spin_until: Callable[..., bool],
                                               tmp_path: Path) -> None:
    env = make_env("push", "state", markers=True)
    extrinsics = geometry.save_extrinsics(tmp_path / "cam.yaml", env.camera_pose(TRACKER_CAMERA))
    env.close()
    sim = _node(SimNode, task="push", obs_mode="state", rate_hz=10.0, markers=True,
                camera=TRACKER_CAMERA, privileged_poses=False, image_width=640,
                image_height=480)
    tracker = _node(TrackerNode, task="push", extrinsics_file=str(extrinsics))
    helper = Node("tracker_twin_helper")
    recs = {t: Recorder() for t in (topics.OBJECT_POSE, topics.GOAL_POSE, topics.EE_POSE)}
    for topic, rec in recs.items():
        helper.create_subscription(PoseStamped, topic, rec, COLLECT)
    images = Recorder()
    helper.create_subscription(Image, topics.COLOR_IMAGE, images, COLLECT)
    for node in (sim, tracker, helper):
        executor.add_node(node)
    assert spin_until(lambda: len(recs[topics.OBJECT_POSE].msgs) >= 3
                      and len(recs[topics.GOAL_POSE].msgs) >= 3, timeout_s=30)
    image = images.msgs[-1]
    assert (image.width, image.height) == (640, 480)

    def stamped_by_the_twin() -> bool:
        # Every pose is the tracker's (the twin publishes none), stamped with an image's stamp,
        # which is also the stamp of that step's ee_pose.
        twin = {stamp_ns(m) for m in images.msgs} & {stamp_ns(m) for m in
                                                     recs[topics.EE_POSE].msgs}
        return all({stamp_ns(m) for m in recs[t].msgs[:3]} <= twin
                    for t in (topics.OBJECT_POSE, topics.GOAL_POSE))

    assert spin_until(stamped_by_the_twin, timeout_s=10)
    with sim._lock:
        state = sim.env.task_state()
    obj, _ = convert.pose_arrays(recs[topics.OBJECT_POSE].msgs[-1])
    goal, _ = convert.pose_arrays(recs[topics.GOAL_POSE].msgs[-1])
    # Nothing commands the arm: the cube rests where it started, the goal is fixed.
    assert np.linalg.norm(obj - state.obj) < 0.03
    assert np.linalg.norm(goal - state.goal) < 0.03


def test_sim_refuses_a_camera_it_does_not_have(ros: None) -> None:
    with pytest.raises(ConfigError, match="tracker_cam"):
        _node(SimNode, task="push", obs_mode="state", camera=TRACKER_CAMERA)
    with pytest.raises(ConfigError, match="camera"):
        _node(SimNode, task="push", obs_mode="state", markers=True, camera="nope")
