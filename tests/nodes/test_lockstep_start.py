"""Lock-step start-up with a planner that is still loading: no step on holds, no deadlock.

The twin published its first observation while the planner was loading its checkpoint; after
lockstep_timeout_s it stepped on the hold, the episode manager's strict pairing skipped that
step, the episode never reached its length and the twin waited for a reset forever.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from fowm.nodes.episode_manager import EpisodeManagerNode
from fowm.nodes.sim_node import SimNode
from fowm.ros import qos
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState

from fowm_core.contract import topics


def _node(cls: type, **params: object) -> Node:
    return cls(parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])


def test_twin_waits_for_the_planner_and_the_manager_counts_held_steps(
        executor: SingleThreadedExecutor, spin_until: Callable[..., bool]) -> None:
    sim = _node(SimNode, task="reach", obs_mode="state", lockstep=True, lockstep_timeout_s=0.2,
                episode_length=3)
    manager = _node(EpisodeManagerNode, task="reach", lockstep=True, episode_length=3,
                    num_episodes=1)
    executor.add_node(sim)
    executor.add_node(manager)
    assert spin_until(lambda: manager.tracker.active, timeout_s=30)
    deadline = time.monotonic() + 1.5                 # > 5 answer timeouts without a planner
    spin_until(lambda: time.monotonic() > deadline, timeout_s=5)
    assert sim.steps == 0, "the twin stepped on holds before any planner was up"
    # The "planner" comes up and never answers: each step is a hold after the timeout, and the
    # manager counts those steps as the twin does, so the episode ends.
    late = Node("late_planner")
    late.create_publisher(JointState, topics.ACTION, qos.COMMAND)
    executor.add_node(late)
    assert spin_until(lambda: any(e["event"] == "end" for e in manager.events), timeout_s=30)
    end = next(e for e in manager.events if e["event"] == "end")
    assert end["steps"] == 3 and sim.executed_holds == 3
