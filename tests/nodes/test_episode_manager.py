"""fowm_episode_manager with real rclpy against the twin: rewards equal the shared reward function
on the published state, fixed-length episodes with seeded resets, and the operator flow."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fowm.nodes.episode_manager import EpisodeManagerNode
from fowm.nodes.sim_node import SimNode
from fowm.ros import qos
from geometry_msgs.msg import PoseStamped
from helpers.stack import Recorder, stamp_ns
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from std_msgs.msg import Float32, String
from std_srvs.srv import SetBool, Trigger

from fowm_core import tasks
from fowm_core.contract import topics
from fowm_core.errors import ConfigError
from fowm_core.learning import success
from fowm_core.sim import make_env

ACTION = [0.2, -0.1, -0.5, 0.3]


def _node(cls: type, **params: object) -> Node:
    """Nodes without a checkpoint: the task (and the twin's obs_mode) set here."""
    params = {"task": "lift", **({"obs_mode": "all"} if cls is SimNode else {}), **params}
    return cls(parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])


class Answerer:
    """Stands in for the planner: answers every new ee_pose with ACTION, stamped with it."""

    def __init__(self, node: Node) -> None:
        self.pub = node.create_publisher(JointState, topics.ACTION, qos.COMMAND)
        self.node = node
        self.answered: set[int] = set()
        self.poses: list[PoseStamped] = []
        node.create_subscription(PoseStamped, topics.EE_POSE, self.on_pose, qos.SENSOR_SUB)

    def on_pose(self, msg: PoseStamped) -> None:
        self.poses.append(msg)
        stamp = stamp_ns(msg)
        if stamp not in self.answered:
            self.answered.add(stamp)
            out = JointState(name=list(topics.ACTION_NAMES), position=ACTION)
            out.header.stamp = msg.header.stamp
            self.pub.publish(out)


def test_sim_episodes_have_fixed_length_seeded_resets_and_shared_rewards(
        executor: SingleThreadedExecutor, spin_until: Callable[..., bool]) -> None:
    helper = Node("em_test_helper")
    Answerer(helper)
    rewards_rec, events_rec = Recorder(), Recorder()
    # Depth 10, as a consumer that needs every reward (the recorder's is 200).
    helper.create_subscription(Float32, topics.REWARD, rewards_rec, qos.EVENTS)
    helper.create_subscription(String, topics.EPISODE, events_rec, qos.EVENTS)
    executor.add_node(helper)
    # The twin comes up after the listener has matched, so the first "start" is not missed.
    assert spin_until(lambda: helper.count_publishers(topics.EPISODE) == 0, timeout_s=1)
    manager = _node(EpisodeManagerNode, lockstep=True, episode_length=4, base_seed=7,
                    num_episodes=2)
    executor.add_node(manager)
    assert spin_until(lambda: manager.episode_pub.get_subscription_count() > 0, timeout_s=10)
    sim = _node(SimNode, lockstep=True, episode_length=4)
    executor.add_node(sim)
    ok = spin_until(lambda: len(events_rec.msgs) == 4 and len(rewards_rec.msgs) >= 4,
                    timeout_s=30)
    assert ok, (len(events_rec.msgs), len(rewards_rec.msgs), manager.events)
    events = [json.loads(m.data) for m in events_rec.msgs]
    assert [e["event"] for e in events] == ["start", "end", "start", "end"]
    assert [e["seed"] for e in events] == [7, 7, 8, 8]
    assert [e["episode"] for e in events] == [0, 0, 1, 1]
    end = events[1]
    assert set(end) == {"event", "episode", "task", "seed", "success", "terminal", "steps",
                        "return", "first_stamp_ns", "final_stamp_ns"}
    assert end["steps"] == 4 and end["terminal"] is False and end["task"] == "lift"
    # The same episode stepped directly: same rewards (the shared function, same state).
    env = make_env("lift", "all")
    env.reset(seed=7)
    expected = [env.step(np.array(ACTION, np.float32))[1] for _ in range(4)]
    env.close()
    got = [m.data for m in rewards_rec.msgs[:4]]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)   # Float32 on the wire
    assert end["return"] == pytest.approx(sum(expected), rel=1e-9, abs=1e-9)


def test_real_mode_waits_for_the_operator_and_takes_the_label(
        executor: SingleThreadedExecutor, spin_until: Callable[..., bool]) -> None:
    sim = _node(SimNode, rate_hz=20.0)             # stands in for the real drivers' topics
    manager = _node(EpisodeManagerNode, mode="real", episode_length=3)
    helper = Node("em_operator")
    Answerer(helper)
    confirm = helper.create_client(Trigger, "/fowm_episode_manager/confirm_reset")
    label = helper.create_client(SetBool, "/fowm_episode_manager/label_success")
    for node in (sim, manager, helper):
        executor.add_node(node)
    assert spin_until(lambda: confirm.service_is_ready() and label.service_is_ready(), 10)
    assert not spin_until(lambda: manager.events, timeout_s=0.5)   # nothing before the operator
    future = confirm.call_async(Trigger.Request())
    assert spin_until(future.done, timeout_s=10)
    assert spin_until(lambda: manager.events and manager.tracker.is_done, timeout_s=20)
    assert len(manager.events) == 1                # ended, but the outcome is not labelled yet
    future = label.call_async(SetBool.Request(data=True))
    assert spin_until(future.done, timeout_s=10)
    assert spin_until(lambda: len(manager.events) == 2, timeout_s=10)
    end = manager.events[1]
    assert end["event"] == "end" and end["success"] is True and end["steps"] == 3
    # The twin publishes the object pose, so the tracker scored every step (docs/rewards.md).
    assert end["labelled_by"] == "operator" and end["reward_sources"] == "tracker:3"


@pytest.mark.parametrize("with_classifier", [True, False])
def test_real_mode_without_a_tracked_object_uses_the_classifier_else_the_label(
        executor: SingleThreadedExecutor, spin_until: Callable[..., bool], tmp_path: Path,
        with_classifier: bool) -> None:
    clf = ""
    if with_classifier:
        clf = str(tmp_path / "clf" / success.FILE_NAME)
        success.SuccessClassifier.create(seed=0).save(clf, {"task": "lift"})
    # The object's pose goes elsewhere: as on a robot whose tracker lost the cube.
    sim = SimNode(parameter_overrides=[Parameter("task", value="lift"),
                                       Parameter("obs_mode", value="all"),
                                       Parameter("rate_hz", value=20.0)],
                  cli_args=["--ros-args", "-r", f"{topics.OBJECT_POSE}:=/elsewhere/object_pose"])
    manager = _node(EpisodeManagerNode, mode="real", episode_length=3, classifier=clf)
    helper = Node("em_operator_noobj")
    Answerer(helper)
    rewards = Recorder()
    helper.create_subscription(Float32, topics.REWARD, rewards, qos.EVENTS)   # every reward
    confirm = helper.create_client(Trigger, "/fowm_episode_manager/confirm_reset")
    label = helper.create_client(SetBool, "/fowm_episode_manager/label_success")
    for node in (sim, manager, helper):
        executor.add_node(node)
    assert spin_until(lambda: confirm.service_is_ready() and label.service_is_ready(), 10)
    assert spin_until(confirm.call_async(Trigger.Request()).done, timeout_s=10)
    assert spin_until(lambda: manager.tracker.is_done, timeout_s=20)
    assert spin_until(label.call_async(SetBool.Request(data=False)).done, timeout_s=10)
    assert spin_until(lambda: len(manager.events) == 2, timeout_s=10)
    end = manager.events[1]
    assert end["reward_sources"] == ("classifier:3" if with_classifier else "label:3")
    assert end["labelled_by"] == "operator" and end["success"] is False
    assert spin_until(lambda: len(rewards.msgs) >= 3, timeout_s=5)
    values = [m.data for m in rewards.msgs[:3]]
    assert all(0.0 <= v <= 1.0 for v in values)
    if not with_classifier:
        assert values == [0.0, 0.0, 0.0]           # placeholders: the label fills them in


@pytest.mark.parametrize(("params", "match"), [
    ({"mode": "hybrid"}, "mode='hybrid'"),
    ({"task": "stack"}, "task='stack'"),
    ({"episode_length": 0}, "episode_length"),
])
def test_bad_parameters_stop_the_node_with_a_clear_message(
        ros: None, params: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _node(EpisodeManagerNode, **params)


def test_the_tasks_action_size_is_the_one_the_twin_uses() -> None:
    assert tasks.get("lift").action_dim == len(ACTION)
