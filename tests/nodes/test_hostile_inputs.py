"""No input stops anything, and time is checked (real rclpy). Each fault below once killed a node,
a thread or the whole process of `fowm run --bag-dir`: publish the hostile message, then check
the node and its threads are alive, still control (actions for good observations afterwards) and
that the refusal is counted on /diagnostics."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from fowm.nodes.episode_manager import EpisodeManagerNode
from fowm.nodes.planner_node import PlannerNode
from fowm.nodes.recorder_node import RecorderNode
from fowm.nodes.sim_node import SimNode
from fowm.ros import qos
from geometry_msgs.msg import PoseStamped
from helpers.stack import Recorder, tiny_checkpoint
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

from fowm_core.contract import topics
from fowm_core.data import convert
from fowm_core.learning import checkpoints
from fowm_core.runtime import trust

JOINTS = [f"joint{i}" for i in range(1, 8)] + [topics.GRIPPER_JOINT]
AHEAD_NS = 100 * 1_000_000_000
SpinUntil = Callable[..., bool]


@pytest.fixture(scope="module")
def checkpoints_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ckpt")
    for seed in range(3):
        tiny_checkpoint(out / f"c{seed}.safetensors", seed=seed)
    return out


class Robot:
    """Camera and arm streams, one stamp per call; ``joints``/``offset_ns`` make them hostile."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.pubs = {t: node.create_publisher(m, t, qos.SENSOR_PUB) for t, m in (
            (topics.COLOR_IMAGE, Image), (topics.EE_POSE, PoseStamped),
            (topics.OBJECT_POSE, PoseStamped), (topics.GOAL_POSE, PoseStamped),
            (topics.JOINT_STATES, JointState))}

    def publish(self, offset_ns: int = 0, joints: JointState | None = None,
                only: tuple[str, ...] | None = None) -> None:
        now = self.node.get_clock().now().nanoseconds + offset_ns
        stamp = convert.to_time(now, Time)
        img = Image(height=84, width=84, encoding="rgb8", step=252,
                    data=np.full((84, 84, 3), 120, np.uint8).tobytes())
        msgs = {topics.COLOR_IMAGE: img}
        for topic, x in ((topics.EE_POSE, 0.3), (topics.OBJECT_POSE, 0.35),
                         (topics.GOAL_POSE, 0.4)):
            pose = PoseStamped()
            pose.header.frame_id = topics.BASE_FRAME
            pose.pose.position.x, pose.pose.position.z, pose.pose.orientation.w = x, 0.2, 1.0
            msgs[topic] = pose
        msgs[topics.JOINT_STATES] = joints or JointState(name=JOINTS, position=[0.0] * 8)
        for topic, msg in msgs.items():
            if only is None or topic in only:
                msg.header.stamp = stamp
                self.pubs[topic].publish(msg)


def _setup(executor: SingleThreadedExecutor, ckpt: Path, **params: object
           ) -> tuple[PlannerNode, Robot, Node, dict[str, Recorder]]:
    values = {"checkpoint": str(ckpt), "rate_hz": 20.0, "max_obs_age_s": 0.3, **params}
    planner = PlannerNode(parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
    helper = Node("hostile_helper")
    recs = {"action": Recorder(), "diag": Recorder()}
    helper.create_subscription(JointState, topics.ACTION, recs["action"], qos.COMMAND)
    helper.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, recs["diag"], qos.DIAGNOSTICS)
    executor.add_node(planner)
    executor.add_node(helper)
    return planner, Robot(helper), helper, recs


def _planner_values(recs: dict[str, Recorder]) -> dict[str, str]:
    for msg in reversed(recs["diag"].msgs):
        for status in msg.status:
            if status.name == "fowm_planner: control loop":
                return {kv.key: kv.value for kv in status.values}
    return {}


def _still_controls(planner: PlannerNode, robot: Robot, recs: dict[str, Recorder],
                    spin_until: SpinUntil) -> bool:
    """New planned (non-zero) actions for good observations, from a running control loop."""
    plans, actions = planner.counters.plans, len(recs["action"].msgs)
    return (spin_until(lambda: planner.counters.plans >= plans + 2
                       and any(any(m.position) for m in recs["action"].msgs[actions:]),
                       timeout_s=20, every=robot.publish)
            and planner.loop.is_running)


def _latched(helper: Node, topic: str) -> object:
    return helper.create_publisher(String, topic, qos.LATCHED)


def test_bad_weights_and_episode_messages_are_refused_and_counted(
        executor: SingleThreadedExecutor, spin_until: SpinUntil, checkpoints_dir: Path) -> None:
    planner, robot, helper, recs = _setup(executor, checkpoints_dir / "c0.safetensors")
    assert spin_until(lambda: planner.counters.plans >= 2, timeout_s=20, every=robot.publish)
    weights = _latched(helper, topics.WEIGHTS)
    weights.publish(String(data='{"path": "x", "step": "abc"}'))   # latched: every restart too
    events = helper.create_publisher(String, topics.EPISODE, qos.EVENTS)
    events.publish(String(data="[]"))
    assert spin_until(lambda: planner.inputs.refused.get(topics.WEIGHTS, 0) >= 1
                      and planner.inputs.refused.get(topics.EPISODE, 0) >= 1,
                      timeout_s=10, every=robot.publish), planner.inputs.refused
    assert _still_controls(planner, robot, recs, spin_until)
    assert spin_until(lambda: int(_planner_values(recs).get("rejected_inputs", 0)) >= 2,
                      timeout_s=5, every=robot.publish)
    by_topic = json.loads(_planner_values(recs)["rejected_by_topic"])
    assert by_topic[topics.WEIGHTS] >= 1 and by_topic[topics.EPISODE] >= 1
    assert "'step'" in planner.inputs.last or "list" in planner.inputs.last


def test_short_joint_state_and_a_failing_tick_hold_and_the_loop_goes_on(
        executor: SingleThreadedExecutor, spin_until: SpinUntil, checkpoints_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    planner, robot, _, recs = _setup(executor, checkpoints_dir / "c0.safetensors")
    assert spin_until(lambda: planner.counters.plans >= 2, timeout_s=20, every=robot.publish)
    short = JointState(name=JOINTS, position=[0.0] * 3)            # fewer positions than names
    for _ in range(3):
        robot.publish(joints=short)
    assert spin_until(lambda: planner.inputs.refused.get(topics.JOINT_STATES, 0) >= 1,
                      timeout_s=10), planner.inputs.refused
    assert _still_controls(planner, robot, recs, spin_until)
    # Whatever raises in a tick (here: an IndexError) holds, reports ERROR, and the loop goes on.
    arrays = planner._arrays
    calls = {"n": 0}

    def fail_once(obs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 1:
            raise IndexError("index 7 is out of bounds for axis 0 with size 3")
        return arrays(obs)

    monkeypatch.setattr(planner, "_arrays", fail_once)
    assert spin_until(lambda: planner.counters.tick_errors >= 1, timeout_s=10,
                      every=robot.publish)

    def error_reported() -> bool:
        return any(s.level == DiagnosticStatus.ERROR and "control tick failed" in s.message
                   for m in recs["diag"].msgs for s in m.status)

    assert spin_until(error_reported, timeout_s=5, every=robot.publish)
    assert planner.counters.holds_by_reason.get("planner_error", 0) >= 1
    assert _still_controls(planner, robot, recs, spin_until)
    assert int(_planner_values(recs)["tick_errors"]) >= 1


def test_future_stamps_are_refused_and_cannot_wedge_the_planner(
        executor: SingleThreadedExecutor, spin_until: SpinUntil, checkpoints_dir: Path) -> None:
    planner, robot, _, recs = _setup(executor, checkpoints_dir / "c0.safetensors")
    assert spin_until(lambda: planner.counters.plans >= 2, timeout_s=20, every=robot.publish)
    # Sensor subscriptions keep one sample (best effort, depth 1): spin after each message.
    robot.publish(offset_ns=AHEAD_NS)                             # one whole observation ahead
    assert spin_until(lambda: planner.inputs.future_stamps >= 3, timeout_s=10)
    for k in range(12):                                           # more than the pairing queue
        robot.publish(offset_ns=AHEAD_NS + (k + 1) * 1_000_000, only=(topics.JOINT_STATES,))
        assert spin_until(lambda k=k: planner.inputs.future_stamps >= 4 + k, timeout_s=10)
    assert _still_controls(planner, robot, recs, spin_until)
    latest = planner.inbox.newest()
    assert latest is not None and latest.stamp_ns < planner.get_clock().now().nanoseconds
    assert spin_until(lambda: int(_planner_values(recs).get("future_stamps", 0)) >= 15,
                      timeout_s=5, every=robot.publish)


def test_validator_survives_refusals_fifos_dev_zero_and_its_own_death(
        executor: SingleThreadedExecutor, spin_until: SpinUntil, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    trusted = tmp_path / "checkpoints"
    trusted.mkdir()
    live = tiny_checkpoint(tmp_path / "c0.safetensors", seed=0)
    key_file = trust.generate_key(tmp_path / "lab.key")
    key = trust.load_key(key_file)
    planner, robot, helper, recs = _setup(executor, live, **{
        "trust.key_file": str(key_file), "trust.trusted_dir": str(trusted)})
    swapper = planner.weights.swapper
    weights = _latched(helper, topics.WEIGHTS)
    steps = iter(range(1, 100))

    def checkpoint(seed: int) -> Path:
        return tiny_checkpoint(trusted / f"c{seed}.safetensors", seed=seed, step=next(steps))

    def announce(path: Path | str, step: int | None = None) -> None:
        real = Path(path).is_file()
        step = checkpoints.read_meta(path)["step"] if real else step
        sha = hashlib.sha256(Path(path).read_bytes()).hexdigest() if real else "ab" * 32
        weights.publish(String(data=json.dumps(trust.announcement(
            key, path=path, sha256=sha, step=step, cfg=planner.cfg, sender="test"))))

    assert spin_until(lambda: planner.counters.plans >= 5, timeout_s=20, every=robot.publish)
    announce(checkpoint(1))                                      # logs at info ...
    assert spin_until(lambda: swapper.stats.swaps == 1, timeout_s=30, every=robot.publish)
    fifo = trusted / "weights.fifo"
    os.mkfifo(fifo)
    for step, bad in enumerate((fifo, "/dev/zero", trusted / "missing.safetensors"), 50):
        announce(bad, step)                                      # ... then at warning
        assert spin_until(lambda b=bad: any(p == str(b) for p, _ in swapper.stats.refused),
                          timeout_s=20, every=robot.publish), swapper.stats.refused
    reasons = dict(swapper.stats.refused)
    assert "not a regular file" in reasons[str(fifo)]
    assert "outside the trusted directory" in reasons["/dev/zero"]
    # A validator that dies anyway (here: SystemExit escapes every handler) is restarted.
    real_validate = swapper._validate

    def die_once(ann: object) -> object:
        monkeypatch.setattr(swapper, "_validate", real_validate)
        raise SystemExit

    monkeypatch.setattr(swapper, "_validate", die_once)
    announce(checkpoint(3))
    assert spin_until(lambda: swapper.stats.restarts >= 1, timeout_s=10, every=robot.publish)
    last = checkpoint(2)
    announce(last)
    assert spin_until(lambda: swapper.stats.swaps == 2, timeout_s=30, every=robot.publish)
    assert planner.weights.live.path == str(last)
    assert _still_controls(planner, robot, recs, spin_until)
    assert spin_until(lambda: int(_planner_values(recs).get("validator_restarts", 0)) >= 1,
                      timeout_s=5, every=robot.publish)


def test_a_stopped_control_loop_is_restarted(
        executor: SingleThreadedExecutor, spin_until: SpinUntil, checkpoints_dir: Path) -> None:
    planner, robot, _, recs = _setup(executor, checkpoints_dir / "c0.safetensors")
    assert spin_until(lambda: planner.counters.plans >= 2, timeout_s=20, every=robot.publish)
    planner.loop.stop()                                           # as if its thread had died
    assert spin_until(lambda: planner.counters.loop_restarts == 1, timeout_s=10,
                      every=robot.publish)
    assert _still_controls(planner, robot, recs, spin_until)


# -- the episode manager and the recorder -------------------------------------------------------
class Answerer:
    """Stands in for the planner: answers every ee_pose with a constant action."""

    def __init__(self, node: Node) -> None:
        self.pub = node.create_publisher(JointState, topics.ACTION, qos.COMMAND)
        node.create_subscription(PoseStamped, topics.EE_POSE, self.on_pose, qos.SENSOR_SUB)

    def on_pose(self, msg: PoseStamped) -> None:
        out = JointState(name=list(topics.ACTION_NAMES), position=[0.1, 0.0, 0.0, 0.0])
        out.header.stamp = msg.header.stamp
        self.pub.publish(out)


def test_episode_manager_survives_bad_joint_states_future_stamps_and_a_dead_worker(
        executor: SingleThreadedExecutor, spin_until: SpinUntil,
        monkeypatch: pytest.MonkeyPatch) -> None:
    run_episode = EpisodeManagerNode._run_episode
    calls = {"n": 0}

    def crash_first(self: EpisodeManagerNode, episode: int) -> bool:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("worker bug")
        return run_episode(self, episode)

    monkeypatch.setattr(EpisodeManagerNode, "_run_episode", crash_first)
    helper = Node("em_hostile_helper")
    Answerer(helper)
    robot = Robot(helper)
    events, diags = Recorder(), Recorder()
    helper.create_subscription(String, topics.EPISODE, events, qos.EVENTS)
    helper.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, diags, qos.DIAGNOSTICS)
    executor.add_node(helper)
    params = {"lockstep": True, "episode_length": 3, "num_episodes": 2, "task": "lift"}
    manager = EpisodeManagerNode(parameter_overrides=[Parameter(k, value=v)
                                                      for k, v in params.items()])
    executor.add_node(manager)
    # An observation set whose joint state lacks the arm's joints, then future-stamped ones.
    wrong = JointState(name=["a", "b"], position=[0.0, 0.0])
    assert spin_until(lambda: manager.inputs.refused.get(topics.JOINT_STATES, 0) >= 1,
                      timeout_s=10, every=lambda: robot.publish(offset_ns=-5 * 10**9,
                                                                joints=wrong))
    for k in range(12):                                  # best effort, depth 1: one at a time
        robot.publish(offset_ns=AHEAD_NS + k, only=(topics.JOINT_STATES,))
        assert spin_until(lambda k=k: manager.inputs.future_stamps >= k + 1, timeout_s=10)
    sim = SimNode(parameter_overrides=[Parameter(k, value=v) for k, v in (
        ("lockstep", True), ("episode_length", 3), ("task", "lift"), ("obs_mode", "state"))])
    executor.add_node(sim)
    ends = lambda: [json.loads(m.data) for m in events.msgs if '"end"' in m.data]  # noqa: E731
    assert spin_until(lambda: len(ends()) == 2, timeout_s=60), manager.events
    assert [e["steps"] for e in ends()] == [3, 3]
    assert manager._worker.restarts == 1 and calls["n"] >= 3

    def reported() -> bool:
        for msg in diags.msgs:
            for s in msg.status:
                values = {kv.key: kv.value for kv in s.values}
                if (s.name == "fowm_episode_manager: episodes"
                        and int(values.get("rejected_inputs", 0)) >= 13
                        and values.get("worker_restarts") == "1"):
                    return True
        return False

    assert spin_until(reported, timeout_s=5)


def test_recorder_refuses_bad_weights_and_events_and_keeps_recording(
        executor: SingleThreadedExecutor, spin_until: SpinUntil, tmp_path: Path) -> None:
    rec = RecorderNode(parameter_overrides=[Parameter("bag_dir", value=str(tmp_path)),
                                            Parameter("grace_s", value=0.1)])
    helper = Node("rec_hostile_helper")
    weights = _latched(helper, topics.WEIGHTS)
    events = helper.create_publisher(String, topics.EPISODE, qos.EVENTS)
    for node in (rec, helper):
        executor.add_node(node)
    assert spin_until(lambda: rec.count_publishers(topics.WEIGHTS) >= 1
                      and events.get_subscription_count() >= 1, timeout_s=10)
    weights.publish(String(data='{"path": "x", "step": "abc"}'))
    for text in ("[]", '{"event": "start"}', "x" * 10_000):
        events.publish(String(data=text))
    assert spin_until(lambda: rec.inputs.refused.get(topics.EPISODE, 0) >= 3
                      and rec.inputs.refused.get(topics.WEIGHTS, 0) >= 1, timeout_s=10), (
        rec.inputs.refused)
    assert rec._latched == {}                                     # the bad one opens no bag
    good = '{"path": "/w/c1.safetensors", "step": 1}'
    weights.publish(String(data=good))
    assert spin_until(lambda: False in rec._latched, timeout_s=10)
    assert spin_until(lambda: rec._writer.is_alive(), timeout_s=1)
