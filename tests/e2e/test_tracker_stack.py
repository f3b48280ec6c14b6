"""The sim stack in tracker mode (docs/perception.md): the twin publishes the tracker camera and the
arm but no object or goal pose, fowm_tracker supplies them from the ArUco markers, and the
episode manager's rewards are the task's reward of the *tracked* poses, step by step."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from fowm.nodes.episode_manager import EpisodeManagerNode
from fowm.nodes.sim_node import SimNode
from fowm.nodes.tracker_node import TrackerNode
from fowm.ros import tracker_mode
from geometry_msgs.msg import PoseStamped
from helpers.spin import spin_until
from helpers.stack import Recorder, stamp_ns
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Float32

from fowm_core import tasks
from fowm_core.contract import topics
from fowm_core.data import convert
from fowm_core.perception import geometry
from fowm_core.sim import make_env
from fowm_core.sim.markers import TRACKER_CAMERA

LENGTH, SEED = 6, 11
DEEP = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)


def _node(cls: type[Node], **params: object) -> Node:
    return cls(parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])


class ZeroPlanner:
    """Answers each lock-step observation (its ee_pose stamp) with a hold, so the cube stays put
    and the rewards depend on the tracked poses alone; records what the rewards are made of."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.action_pub = node.create_publisher(JointState, topics.ACTION, DEEP)
        self.poses = {t: Recorder() for t in (topics.OBJECT_POSE, topics.GOAL_POSE,
                                              topics.EE_POSE)}
        for topic, rec in self.poses.items():
            node.create_subscription(PoseStamped, topic, rec, DEEP)
        self.rewards = Recorder()
        node.create_subscription(Float32, topics.REWARD, self.rewards, DEEP)
        node.create_subscription(PoseStamped, topics.EE_POSE, self._answer, DEEP)

    def _answer(self, msg: PoseStamped) -> None:
        self.action_pub.publish(JointState(header=msg.header, name=list(topics.ACTION_NAMES[:3]),
                                           position=[0.0, 0.0, 0.0]))

    def by_stamp(self, topic: str) -> dict[int, np.ndarray]:
        return {stamp_ns(m): convert.pose_arrays(m)[0] for m in self.poses[topic].msgs}


def test_rewards_come_from_the_tracked_poses(executor: SingleThreadedExecutor,
                                             tmp_path: Path) -> None:
    env = make_env("push", "state", markers=True)
    extrinsics = geometry.save_extrinsics(tmp_path / "camera.yaml",
                                          env.camera_pose(TRACKER_CAMERA))
    env.reset(seed=SEED)
    truth = env.task_state()
    env.close()
    common = {"task": "push", "lockstep": True, "use_sim_time": True}
    sim = _node(SimNode, **{**common, "obs_mode": "state", "use_sim_time": False,
                            "episode_length": LENGTH, **tracker_mode.SIM_PARAMS})
    tracker = _node(TrackerNode, task="push", extrinsics_file=str(extrinsics), use_sim_time=True)
    manager = _node(EpisodeManagerNode, **common, mode="sim", episode_length=LENGTH,
                    base_seed=SEED, num_episodes=1, service_timeout_s=60.0)
    helper = Node("zero_planner")
    planner = ZeroPlanner(helper)
    for node in (sim, tracker, manager, helper):
        executor.add_node(node)
    assert spin_until(executor, lambda: any(e["event"] == "end" for e in manager.events), 120)
    end = next(e for e in manager.events if e["event"] == "end")
    assert end["steps"] == LENGTH
    assert spin_until(executor, lambda: len(planner.rewards.msgs) >= LENGTH, 10)
    # The twin published no object or goal pose: every one came from the tracker.
    assert helper.get_publishers_info_by_topic(topics.OBJECT_POSE)[0].node_name == "fowm_tracker"
    objs, goals = planner.by_stamp(topics.OBJECT_POSE), planner.by_stamp(topics.GOAL_POSE)
    stamps = sorted(planner.by_stamp(topics.EE_POSE))
    steps = [s for s in stamps if s >= end["first_stamp_ns"]][1:LENGTH + 1]
    zero = np.zeros(3)
    expected = [tasks.reward("push", tasks.TaskState(eef=zero, gripper=0.0, obj=objs[s],
                                                     goal=goals[s]), zero) for s in steps]
    published = [m.data for m in planner.rewards.msgs[:LENGTH]]
    np.testing.assert_allclose(published, expected, rtol=1e-5)
    # ... and not from the simulator's state, which the tracked poses miss by millimetres.
    true_reward = tasks.reward("push", tasks.TaskState(eef=zero, gripper=0.0, obj=truth.obj,
                                                       goal=truth.goal), zero)
    assert all(abs(r - true_reward) > 1e-6 for r in published)
    assert abs(np.mean(published) - true_reward) < 0.05


def test_fowm_run_in_tracker_mode(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`fowm run --tracker FILE`: the planner acts on the tracker's poses, with no second
    publisher of an input (the twin creates none) and no hold past the first observation."""
    from fowm.bringup import run_stack
    from helpers.loop import tiny_checkpoint

    monkeypatch.setenv("ROS_DOMAIN_ID", str(150 + (os.getpid() + 53) % 80))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env = make_env("push", "state", markers=True)
    extrinsics = geometry.save_extrinsics(tmp_path / "camera.yaml",
                                          env.camera_pose(TRACKER_CAMERA))
    env.close()
    ckpt = tiny_checkpoint(tmp_path / "tiny.safetensors", "push")
    overrides = {"fowm_sim": {"episode_length": LENGTH},
                 "fowm_episode_manager": {"episode_length": LENGTH, "base_seed": SEED,
                                          "service_timeout_s": 60.0}}
    result = run_stack(Path(__file__).resolve().parents[2] / "config" / "sim.yaml", ckpt,
                       duration_s=120, lockstep=True, episodes=1, overrides=overrides,
                       tracker_extrinsics=extrinsics)
    assert [e["steps"] for e in result.ends] == [LENGTH]
    assert np.isfinite(result.ends[0]["return"])
    assert set(result.planner_holds) <= {"no_observation"}, result.planner_holds
