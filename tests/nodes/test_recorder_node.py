"""fowm_recorder: exact wire bytes, one bag per episode cut at the episode's stamps, atomic
appearance, and bags that read back into the transitions the live loop saw."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rclpy
import yaml
from fowm.bringup import stack_factories
from fowm.nodes.recorder_node import RecorderNode, header_stamp_ns
from fowm.ros import qos
from geometry_msgs.msg import PoseStamped
from helpers.loop import tiny_model_checkpoint
from helpers.stack import Recorder, stamp_ns
from rclpy.parameter import Parameter
from rclpy.serialization import serialize_message
from rosbags.rosbag2 import Reader
from sensor_msgs.msg import JointState
from std_msgs.msg import Float32, String

from fowm_core.contract import topics
from fowm_core.contract.messages import EpisodeEvent
from fowm_core.data import bags, convert

TS = convert.TYPESTORE
S = 1_000_000_000


def test_header_stamp_is_read_from_the_serialized_bytes() -> None:
    msg = PoseStamped()
    msg.header.stamp.sec, msg.header.stamp.nanosec = 12, 345
    assert header_stamp_ns(serialize_message(msg)) == 12 * S + 345
    js = JointState()
    js.header.stamp.sec = 7
    assert header_stamp_ns(serialize_message(js)) == 7 * S


def _raw(topic: str, msg: Any) -> bytes:
    return bytes(TS.serialize_cdr(msg, topics.MSG_TYPES[topic]))


def _observation(stamp: int, x: float) -> list[tuple[str, bytes]]:
    eef = (0.3 + x, 0.0, 0.2)
    return [(topics.EE_POSE, _raw(topics.EE_POSE, convert.pose_msg(stamp, eef))),
            (topics.JOINT_STATES, _raw(topics.JOINT_STATES, convert.joint_state_msg(
                stamp, np.zeros(7), 0.4))),
            (topics.OBJECT_POSE, _raw(topics.OBJECT_POSE, convert.pose_msg(stamp, (0.4, 0, .03)))),
            (topics.GOAL_POSE, _raw(topics.GOAL_POSE, convert.pose_msg(stamp, (0.4, 0.1, .03))))]


def _synthetic_episode() -> tuple[list[tuple[str, bytes]], dict[str, Any]]:
    """Pre-reset observation + its answer, 3 steps, the final observation + an answer to it."""
    stamps = [10 * S + i * 160_000_000 for i in range(4)]
    pre = 9 * S
    act = [np.array([0.1 * i, -0.2, 0.3, 0.5], np.float32) for i in range(4)]
    start = EpisodeEvent(event="start", episode=3, task="lift", seed=11)
    end = EpisodeEvent(event="end", episode=3, task="lift", seed=11, success=True,
                       terminal=False, first_stamp_ns=stamps[0], final_stamp_ns=stamps[3])
    seq = [(topics.EPISODE, _raw(topics.EPISODE, convert.event_msg(start)))]
    seq += _observation(pre, -0.1)
    seq.append((topics.ACTION, _raw(topics.ACTION, convert.action_msg(pre, act[0]))))
    for t, stamp in enumerate(stamps):
        if t > 0:
            seq.append((topics.REWARD, _raw(topics.REWARD, convert.reward_msg(-1.0 + t))))
        seq += _observation(stamp, 0.01 * t)
        seq.append((topics.ACTION, _raw(topics.ACTION, convert.action_msg(stamp, act[t]))))
    seq.append((topics.EPISODE, _raw(topics.EPISODE, convert.event_msg(end))))
    return seq, {"stamps": stamps, "actions": act[:3], "rewards": [0.0, 1.0, 2.0]}


def _recorder_with_sources(executor, spin_until, tmp_path: Path) -> tuple[RecorderNode, dict]:
    """A recorder writing into tmp_path and a publisher matched to each topic it records."""
    rec = RecorderNode(parameter_overrides=[Parameter("bag_dir", value=str(tmp_path)),
                                            Parameter("grace_s", value=0.2)])
    pub_node = rclpy.create_node("episode_source")
    executor.add_node(rec)
    executor.add_node(pub_node)
    qos_of = {topics.EPISODE: qos.EVENTS, topics.ACTION: qos.COMMAND, topics.REWARD: qos.COMMAND}
    classes = {topics.EPISODE: String, topics.ACTION: JointState, topics.REWARD: Float32,
               topics.EE_POSE: PoseStamped, topics.OBJECT_POSE: PoseStamped,
               topics.GOAL_POSE: PoseStamped, topics.JOINT_STATES: JointState}
    pubs = {t: pub_node.create_publisher(c, t, qos_of.get(t, qos.SENSOR_PUB))
            for t, c in classes.items()}
    assert spin_until(lambda: all(p.get_subscription_count() for p in pubs.values()))
    return rec, pubs


def test_an_episode_is_cut_to_its_stamps_and_written_from_the_wire_bytes(
        executor, spin_until, tmp_path: Path) -> None:
    rec, pubs = _recorder_with_sources(executor, spin_until, tmp_path)
    seq, expected = _synthetic_episode()
    sent: dict[str, list[bytes]] = {}
    for topic, raw in seq:          # one at a time: depth-1 publishers must not overwrite
        before = rec._last_log_ns
        pubs[topic].publish(raw)
        assert spin_until(lambda b=before: rec._last_log_ns > b)
        sent.setdefault(topic, []).append(raw)
    assert spin_until(lambda: len(rec.written) == 1, timeout_s=10)
    bag = rec.written[0]
    assert [p.name for p in tmp_path.iterdir()] == [bag.name]       # no temp dir left behind
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["version"] == 9 and meta["storage_identifier"] == "mcap"
    with Reader(bag) as reader:
        logged = [(c.topic, bytes(raw)) for c, _, raw in reader.messages()]
    # Byte for byte what was sent, minus the pre-reset observation and the final answer.
    for topic, raw in logged:
        assert raw in sent[topic]
    actions = [raw for topic, raw in logged if topic == topics.ACTION]
    assert actions == sent[topics.ACTION][1:4]
    assert sum(t == topics.EE_POSE for t, _ in logged) == 4
    episode = bags.read_episode_bag(bag, obs_mode="state")          # logged rewards
    np.testing.assert_array_equal(episode.action, np.stack(expected["actions"]))
    np.testing.assert_array_equal(episode.reward, expected["rewards"])
    assert episode.info["stamps_ns"].tolist() == expected["stamps"] and episode.success


def test_a_first_observation_that_beats_the_start_event_is_kept(
        executor, spin_until, tmp_path: Path) -> None:
    """Real mode: the operator resets the scene, then confirms; the episode's first observation
    can reach the recorder before the start event."""
    rec, pubs = _recorder_with_sources(executor, spin_until, tmp_path)
    seq, expected = _synthetic_episode()
    seq.insert(10, seq.pop(0))       # start after the pre-reset and the first observation
    for topic, raw in seq:
        before = rec._last_log_ns
        pubs[topic].publish(raw)
        assert spin_until(lambda b=before: rec._last_log_ns > b)
    assert spin_until(lambda: len(rec.written) == 1, timeout_s=10)
    episode = bags.read_episode_bag(rec.written[0], obs_mode="state")
    assert episode.info["stamps_ns"].tolist() == expected["stamps"]    # the first one included
    np.testing.assert_array_equal(episode.action, np.stack(expected["actions"]))


def test_bags_of_the_live_sim_stack_read_back_into_the_transitions_it_ran(
        executor, spin_until, tmp_path: Path) -> None:
    ckpt = tiny_model_checkpoint(tmp_path / "tiny.safetensors")
    length = 5
    overrides = {"fowm_sim": {"episode_length": length, "obs_mode": "state"},
                 "fowm_episode_manager": {"episode_length": length, "num_episodes": 2,
                                          "service_timeout_s": 30.0}}
    rec = RecorderNode(parameter_overrides=[Parameter("bag_dir", value=str(tmp_path / "bags")),
                                            Parameter("grace_s", value=0.3)])
    nodes = [f() for f in stack_factories(str(ckpt), lockstep=True, overrides=overrides)]
    probe = rclpy.create_node("probe")
    live: dict[str, Recorder] = {t: Recorder() for t in (topics.ACTION, topics.EE_POSE,
                                                         topics.REWARD)}
    for topic, cb in live.items():
        cls = JointState if topic == topics.ACTION else (
            Float32 if topic == topics.REWARD else PoseStamped)
        probe.create_subscription(cls, topic, cb, 100 if topic != topics.EE_POSE else
                                  qos.SENSOR_PUB)
    for node in [*nodes, rec, probe]:
        executor.add_node(node)
    manager = nodes[2]
    assert spin_until(lambda: len(rec.written) == 2, timeout_s=120), manager.events
    ends = [e for e in manager.events if e["event"] == "end"]
    by_stamp = {stamp_ns(m): m for m in live[topics.ACTION].msgs}
    poses = {stamp_ns(m): m for m in live[topics.EE_POSE].msgs}
    rewards = [m.data for m in live[topics.REWARD].msgs]
    for bag, end in zip(sorted(rec.written), ends, strict=True):
        ep = bags.read_episode_bag(bag, obs_mode="state")
        stamps = ep.info["stamps_ns"].tolist()
        assert len(ep) == length and stamps[-1] == end["final_stamp_ns"]
        assert stamps[0] == end["first_stamp_ns"]
        for t in range(length):          # the very action the planner sent for that observation
            np.testing.assert_array_equal(ep.action[t], np.asarray(
                by_stamp[stamps[t]].position, np.float32))
        eef = np.stack([convert.pose_arrays(poses[s])[0] for s in stamps])
        np.testing.assert_allclose(ep.obs["state"][:, :3], eef, atol=1e-6)
        assert ep.success == end["success"]
        relabeled = bags.read_episode_bag(bag, obs_mode="state", recompute_reward=True)
        np.testing.assert_allclose(relabeled.reward, ep.reward, atol=1e-5)
        start = rewards.index(pytest.approx(float(ep.reward[0]), abs=1e-6))
        np.testing.assert_allclose(rewards[start:start + length], ep.reward, atol=1e-6)
    with Reader(sorted(rec.written)[0]) as reader:
        weights = [json.loads(TS.deserialize_cdr(raw, "std_msgs/msg/String").data)
                   for c, _, raw in reader.messages() if c.topic == topics.WEIGHTS]
    assert any(w.get("live") for w in weights)          # which weights acted is in the bag


def test_the_shipped_topic_list_and_qos_overrides_match_the_contract() -> None:
    repo = Path(__file__).resolve().parents[2]
    listed = (repo / "config" / "bag_topics.txt").read_text().split()
    assert tuple(listed) == topics.RECORDED
    overrides = yaml.safe_load((repo / "config" / "qos_overrides.yaml").read_text())
    assert overrides[topics.WEIGHTS]["durability"] == "transient_local"
    assert all(t in topics.MSG_TYPES for t in overrides)
