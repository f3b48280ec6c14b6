"""The topic contract (contract.topics + docs/design.md) as the running sim stack shows it: names,
types, QoS, rates and stamps, observed from outside with real rclpy."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from fowm.nodes.episode_manager import EpisodeManagerNode
from fowm.nodes.planner_node import PlannerNode
from fowm.nodes.sim_node import SimNode
from fowm.ros import qos
from helpers.stack import Recorder, stamp_ns, tiny_checkpoint
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

from fowm_core.contract import topics

SENSORS = (topics.COLOR_IMAGE, topics.COLOR_INFO, topics.JOINT_STATES, topics.EE_POSE,
           topics.OBJECT_POSE, topics.GOAL_POSE)
PUBLISHED = (*SENSORS, topics.ACTION, topics.REWARD, topics.EPISODE, topics.PLAN_MARKERS,
             topics.DIAGNOSTICS)
RATE_HZ = 6.25


def _msg_class(type_name: str) -> type:
    package, _, name = type_name.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


def _qos_for(topic: str) -> Any:
    if topic in SENSORS:
        return qos.SENSOR_SUB
    if topic == topics.EPISODE:
        return qos.EVENTS
    return qos.DIAGNOSTICS if topic == topics.DIAGNOSTICS else qos.COMMAND


def test_running_stack_keeps_the_topic_contract(
        executor: SingleThreadedExecutor, spin_until: Callable[..., bool], tmp_path: Path) -> None:
    observer = Node("contract_observer")
    recs = {t: Recorder() for t in PUBLISHED}
    for topic in PUBLISHED:
        observer.create_subscription(_msg_class(topics.MSG_TYPES[topic]), topic, recs[topic],
                                     _qos_for(topic))
    executor.add_node(observer)
    ckpt = tiny_checkpoint(tmp_path / "tiny.safetensors")
    planner = PlannerNode(parameter_overrides=[Parameter("checkpoint", value=str(ckpt)),
                                               Parameter("rate_hz", value=RATE_HZ)])
    same = Parameter("checkpoint", value=str(ckpt))       # task and obs mode from its sidecar
    for node in (SimNode(parameter_overrides=[same, Parameter("rate_hz", value=RATE_HZ)]),
                 planner, EpisodeManagerNode(parameter_overrides=[same])):
        executor.add_node(node)
    enough = {topics.EE_POSE: 10, topics.ACTION: 4, topics.REWARD: 3, topics.EPISODE: 1,
              topics.PLAN_MARKERS: 2, topics.DIAGNOSTICS: 2}
    assert spin_until(lambda: all(len(recs[t].msgs) >= n for t, n in enough.items()),
                      timeout_s=30), {t: len(r.msgs) for t, r in recs.items()}

    # Names and stock types, as a ROS graph tool (ros2 topic list -t) would see them.
    graph = dict(observer.get_topic_names_and_types())
    for topic in PUBLISHED:
        assert graph.get(topic) == [topics.MSG_TYPES[topic]], (topic, graph.get(topic))

    # QoS: sensors published reliable (REP-2003) and read best effort by the planner; commands
    # reliable depth 1; /diagnostics reliable.
    for topic in SENSORS:
        pubs = observer.get_publishers_info_by_topic(topic)
        assert pubs and all(p.qos_profile.reliability == ReliabilityPolicy.RELIABLE
                            for p in pubs), topic
    for sub in observer.get_subscriptions_info_by_topic(topics.EE_POSE):
        if sub.node_name == "fowm_planner":
            assert sub.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
    action_pubs = observer.get_publishers_info_by_topic(topics.ACTION)
    assert [p.node_name for p in action_pubs] == ["fowm_planner"]
    profile = action_pubs[0].qos_profile
    assert profile.reliability == ReliabilityPolicy.RELIABLE
    assert profile.durability == DurabilityPolicy.VOLATILE
    # History depth is not visible in graph info (DDS does not send it): read the endpoints.
    assert planner.action_pub.qos_profile.depth == 1
    assert all(sub.qos_profile.depth == 1 for sub in planner.subscriptions
               if sub.topic_name in SENSORS)

    # Stamps: one stamp per sim step on every sensor stream; actions answer those stamps.
    stamps = {t: [stamp_ns(m) for m in recs[t].msgs] for t in SENSORS}
    shared = set.intersection(*(set(s) for s in stamps.values()))
    assert len(shared) >= 5
    ee_stamps = set(stamps[topics.EE_POSE])
    for action in recs[topics.ACTION].msgs:
        assert list(action.name) == list(topics.ACTION_NAMES[:len(action.position)])
        assert stamp_ns(action) in ee_stamps or not any(action.position)
    assert any(stamp_ns(a) in ee_stamps for a in recs[topics.ACTION].msgs)

    # Rate: the twin's agent step (stamp intervals, so the test's own scheduling does not count).
    period = np.median(np.diff(sorted(stamps[topics.EE_POSE]))) * 1e-9
    assert abs(period - 1 / RATE_HZ) < 0.25 / RATE_HZ, period

    # Frames, event JSON and diagnostics content.
    assert recs[topics.EE_POSE].msgs[-1].header.frame_id == topics.BASE_FRAME
    assert recs[topics.COLOR_IMAGE].msgs[-1].header.frame_id == topics.CAMERA_FRAME
    markers = recs[topics.PLAN_MARKERS].msgs[-1].markers
    assert all(m.header.frame_id in ("", topics.BASE_FRAME) for m in markers)
    start = json.loads(recs[topics.EPISODE].msgs[0].data)
    assert start["event"] == "start" and {"episode", "task", "seed", "steps", "return",
                                          "success", "terminal"} <= set(start)
    names = {s.name for m in recs[topics.DIAGNOSTICS].msgs for s in m.status}
    assert "fowm_planner: control loop" in names
