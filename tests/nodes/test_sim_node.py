"""fowm_sim with real rclpy: the robot's topics with one stamp per step, command timeout → hold,
lock-step on /clock, seeded resets, parameter checks."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import numpy as np
import pytest
from fowm.nodes import sim_node
from fowm.nodes.sim_node import SimNode
from fowm.ros import qos
from geometry_msgs.msg import PoseStamped
from helpers.stack import Recorder, stamp_ns
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_srvs.srv import Trigger

from fowm_core.contract import topics
from fowm_core.errors import ConfigError
from fowm_core.sim import make_env

STREAMS = {topics.COLOR_IMAGE: Image, topics.COLOR_INFO: CameraInfo,
           topics.JOINT_STATES: JointState, topics.EE_POSE: PoseStamped,
           topics.OBJECT_POSE: PoseStamped, topics.GOAL_POSE: PoseStamped}


def _sim(**params: object) -> SimNode:
    """A twin without a checkpoint: task and obs_mode set here (fowm.ros.checkpoint_task)."""
    params = {"task": "lift", "obs_mode": "all", **params}
    return SimNode(parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])


def _listen(executor: SingleThreadedExecutor) -> tuple[Node, dict[str, Recorder]]:
    helper = Node("sim_test_helper")
    recs = {topic: Recorder() for topic in (*STREAMS, "/clock")}
    for topic, msg_type in STREAMS.items():
        helper.create_subscription(msg_type, topic, recs[topic], qos.SENSOR_SUB)
    helper.create_subscription(Clock, "/clock", recs["/clock"], qos.COMMAND)
    executor.add_node(helper)
    return helper, recs


def _action(helper: Node, stamp: int, values: list[float]) -> JointState:
    msg = JointState(name=list(topics.ACTION_NAMES[:len(values)]), position=values)
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
    return msg


def _ee(recs: dict[str, Recorder], index: int) -> np.ndarray:
    p = recs[topics.EE_POSE].msgs[index].pose.position
    return np.array([p.x, p.y, p.z])


def test_publishes_every_stream_with_one_stamp_per_step(
        executor: SingleThreadedExecutor, spin_until: Callable[..., bool]) -> None:
    sim = _sim(rate_hz=20.0)
    executor.add_node(sim)
    _, recs = _listen(executor)
    assert spin_until(lambda: all(len(recs[t].msgs) >= 4 for t in STREAMS), timeout_s=20)
    stamps = {t: {stamp_ns(m) for m in recs[t].msgs} for t in STREAMS}
    common = set.intersection(*stamps.values())
    assert len(common) >= 3                      # the same stamps on every stream
    image = recs[topics.COLOR_IMAGE].msgs[-1]
    assert (image.encoding, image.height, image.width, image.step) == ("rgb8", 84, 84, 252)
    assert image.header.frame_id == topics.CAMERA_FRAME
    assert np.frombuffer(image.data, np.uint8).std() > 0      # a real render, not black
    info = recs[topics.COLOR_INFO].msgs[-1]
    assert info.k[0] > 0 and info.k[8] == 1.0
    joints = recs[topics.JOINT_STATES].msgs[-1]
    assert list(joints.name)[-1] == topics.GRIPPER_JOINT and len(joints.position) == 8
    assert recs[topics.EE_POSE].msgs[-1].header.frame_id == topics.BASE_FRAME


def test_commands_move_the_arm_and_a_missing_command_stops_it(
        executor: SingleThreadedExecutor, spin_until: Callable[..., bool]) -> None:
    sim = _sim(rate_hz=20.0, command_timeout_s=0.2)
    executor.add_node(sim)
    helper, recs = _listen(executor)
    pub = helper.create_publisher(JointState, topics.ACTION, qos.COMMAND)
    ee = recs[topics.EE_POSE].msgs
    assert spin_until(lambda: len(ee) >= 2, timeout_s=20)

    def command_up() -> None:
        pub.publish(_action(helper, stamp_ns(ee[-1]), [0.0, 0.0, 1.0, 0.0]))

    start = len(ee)
    assert spin_until(lambda: len(ee) >= start + 6, timeout_s=20, every=command_up)
    moved = _ee(recs, -1)[2] - _ee(recs, start)[2]
    assert moved > 0.05                          # ~5 steps up at up to 0.1 m each
    holds_before = sim.executed_holds
    stop = len(ee)                               # no more commands from here on
    assert spin_until(lambda: len(ee) >= stop + 10, timeout_s=20)
    assert sim.executed_holds - holds_before >= 5
    drift = np.abs(_ee(recs, -1) - _ee(recs, -4)).max()
    assert drift < 0.005, f"arm kept moving {drift:.4f} m without commands"


def test_lockstep_waits_for_the_answer_and_owns_the_clock(
        executor: SingleThreadedExecutor, spin_until: Callable[..., bool]) -> None:
    sim = _sim(lockstep=True, seed=3)
    executor.add_node(sim)
    helper, recs = _listen(executor)
    pub = helper.create_publisher(JointState, topics.ACTION, qos.COMMAND)
    reset = helper.create_client(Trigger, "/fowm_sim/reset")
    assert spin_until(lambda: reset.service_is_ready(), timeout_s=10)
    assert not recs[topics.EE_POSE].msgs         # nothing before the first reset
    future = reset.call_async(Trigger.Request())
    assert spin_until(future.done, timeout_s=20)
    reply = json.loads(future.result().message)
    assert reply["seed"] == 3
    ee = recs[topics.EE_POSE].msgs
    assert spin_until(lambda: ee and stamp_ns(ee[-1]) == reply["stamp_ns"], timeout_s=10)
    pub.publish(_action(helper, reply["stamp_ns"] - 1, [0.0, 0.0, 1.0, 0.0]))  # wrong stamp
    assert not spin_until(lambda: len(ee) > 1, timeout_s=1.0)   # ignored: no step
    pub.publish(_action(helper, reply["stamp_ns"], [0.0, 0.0, 1.0, 0.0]))
    assert spin_until(lambda: len(ee) == 2, timeout_s=10)
    assert stamp_ns(ee[1]) - stamp_ns(ee[0]) == 160_000_000    # one agent step of sim time
    clock = recs["/clock"].msgs
    assert spin_until(lambda: clock and stamp_of_clock(clock[-1]) == stamp_ns(ee[1]), timeout_s=5)


def stamp_of_clock(msg: Clock) -> int:
    return msg.clock.sec * 1_000_000_000 + msg.clock.nanosec


def test_reset_with_the_same_seed_is_reproducible(
        executor: SingleThreadedExecutor, spin_until: Callable[..., bool]) -> None:
    sim = _sim(lockstep=True, seed=5)
    executor.add_node(sim)
    helper, recs = _listen(executor)
    reset = helper.create_client(Trigger, "/fowm_sim/reset")
    assert spin_until(lambda: reset.service_is_ready(), timeout_s=10)
    objects = recs[topics.OBJECT_POSE].msgs
    for count in (1, 2):
        future = reset.call_async(Trigger.Request())
        assert spin_until(future.done, timeout_s=20)
        assert spin_until(lambda c=count: len(objects) >= c, timeout_s=10)
    a, b = (m.pose.position for m in objects[:2])
    assert (a.x, a.y, a.z) == (b.x, b.y, b.z)


def test_the_first_reset_waits_for_a_slow_twin_build(
        executor: SingleThreadedExecutor, spin_until: Callable[..., bool], monkeypatch) -> None:
    """The first ~/reset builds the twin on the loop thread; on a busy machine that outlasted a
    0.2 s lock-step timeout and the reset failed, which stops the episode manager."""
    def slow_make_env(*args: object, **kwargs: object) -> object:
        time.sleep(0.8)
        return make_env(*args, **kwargs)

    monkeypatch.setattr(sim_node, "make_env", slow_make_env)
    sim = _sim(task="reach", obs_mode="state", lockstep=True, lockstep_timeout_s=0.2)
    executor.add_node(sim)
    helper, _ = _listen(executor)
    reset = helper.create_client(Trigger, "/fowm_sim/reset")
    assert spin_until(lambda: reset.service_is_ready(), timeout_s=10)
    future = reset.call_async(Trigger.Request())
    assert spin_until(future.done, timeout_s=20)
    assert future.result().success, future.result().message


@pytest.mark.parametrize(("params", "match"), [
    ({"task": "stack"}, "task='stack'"),
    ({"obs_mode": "depth"}, "obs_mode='depth'"),
    ({"rate_hz": 0.0}, "rate_hz"),
    ({"command_timeout_s": 100.0}, "command_timeout_s"),
])
def test_bad_parameters_stop_the_node_with_a_clear_message(
        ros: None, params: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _sim(**params)
