"""A second publisher on an observation topic or on /fowm/action, or a second planner on the
domain, makes fowm_planner hold (zero action) with reason input_conflict at ERROR until it is
gone (real rclpy, real graph discovery)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from fowm.nodes.planner_node import PlannerNode
from fowm.ros import qos
from helpers.stack import Recorder, tiny_checkpoint
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from test_planner_node import FakeRobot

from fowm_core.contract import topics


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


def _planner(checkpoint: Path) -> PlannerNode:
    values = {"checkpoint": str(checkpoint), "rate_hz": 20.0, "max_obs_age_s": 0.3}
    return PlannerNode(parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])


def _conflicts(diag: Recorder) -> list[DiagnosticStatus]:
    return [s for m in diag.msgs for s in m.status
            if s.hardware_id == "fowm_planner"
            and any(kv.key == "hold_reason" and kv.value == "input_conflict" for kv in s.values)]


def _start(executor: SingleThreadedExecutor, checkpoint: Path
           ) -> tuple[PlannerNode, FakeRobot, Node, dict[str, Recorder]]:
    planner = _planner(checkpoint)
    helper = Node("publishers_test_helper")
    robot = FakeRobot(helper)
    recs = {"action": Recorder(), "diag": Recorder()}
    helper.create_subscription(JointState, topics.ACTION, recs["action"], qos.COMMAND)
    helper.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, recs["diag"], qos.DIAGNOSTICS)
    executor.add_node(planner)
    executor.add_node(helper)
    return planner, robot, helper, recs


def test_a_second_observation_publisher_holds_until_it_is_gone(
        executor: SingleThreadedExecutor, spin_until: Callable[..., bool],
        checkpoint: Path) -> None:
    planner, robot, _, recs = _start(executor, checkpoint)
    assert spin_until(lambda: planner.counters.plans >= 2, timeout_s=30, every=robot.publish)
    intruder = Node("flooding_joint_states")
    flood = intruder.create_publisher(JointState, topics.JOINT_STATES, qos.SENSOR_PUB)
    executor.add_node(intruder)
    assert spin_until(lambda: planner.graph_watch.conflict is not None, timeout_s=15,
                      every=robot.publish)
    assert topics.JOINT_STATES in planner.graph_watch.conflict
    assert "/flooding_joint_states" in planner.graph_watch.conflict
    plans = planner.counters.plans
    n_actions = len(recs["action"].msgs)
    assert spin_until(lambda: len(_conflicts(recs["diag"])) >= 3, timeout_s=15,
                      every=lambda: (robot.publish(), flood.publish(JointState())))
    assert planner.counters.plans == plans                   # nothing planned on that data
    held = recs["action"].msgs[n_actions + 1:]
    assert held and all(not any(m.position) for m in held)   # zero motion while it lasts
    assert all(s.level == DiagnosticStatus.ERROR for s in _conflicts(recs["diag"]))
    executor.remove_node(intruder)
    intruder.destroy_node()
    assert spin_until(lambda: planner.graph_watch.conflict is None, timeout_s=15,
                      every=robot.publish)
    assert spin_until(lambda: planner.counters.plans > plans, timeout_s=15, every=robot.publish)


def test_another_action_publisher_or_second_planner_holds_both(
        executor: SingleThreadedExecutor, spin_until: Callable[..., bool],
        checkpoint: Path) -> None:
    planner, robot, _, _ = _start(executor, checkpoint)
    assert spin_until(lambda: planner.counters.plans >= 1, timeout_s=30, every=robot.publish)
    rogue = Node("rogue_controller")
    rogue.create_publisher(JointState, topics.ACTION, qos.COMMAND)
    executor.add_node(rogue)
    assert spin_until(lambda: planner.graph_watch.conflict is not None, timeout_s=15,
                      every=robot.publish)
    conflict = planner.graph_watch.conflict
    assert "/rogue_controller" in conflict and topics.ACTION in conflict
    executor.remove_node(rogue)
    rogue.destroy_node()
    assert spin_until(lambda: planner.graph_watch.conflict is None, timeout_s=15,
                      every=robot.publish)

    second = _planner(checkpoint)                            # a second stack's planner
    executor.add_node(second)
    assert spin_until(lambda: planner.graph_watch.conflict is not None
                      and second.graph_watch.conflict is not None, timeout_s=15,
                      every=robot.publish)
    assert "2 nodes named fowm_planner" in planner.graph_watch.conflict
    plans = (planner.counters.plans, second.counters.plans)
    spin_until(lambda: False, timeout_s=1.0, every=robot.publish)
    assert (planner.counters.plans, second.counters.plans) == plans
    assert planner.counters.holds_by_reason.get("input_conflict", 0) > 0
