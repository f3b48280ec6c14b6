"""The whole sim stack in one process, without ROS's launch (`fowm run --config config/sim.yaml`).

The same node classes as the launch files, composed in one executor (ros2/examples composed.py),
with parameters from the same YAML (--params-file). A SingleThreadedExecutor serves the
callbacks: the control loops run on their own threads (fowm.ros.timing), so nothing here depends on
the executor's timing, and the single-threaded one does not show the stalls of rclpy#1223.
SIGINT/SIGTERM end it cleanly: the first one stops the spin loop (fowm.ros.shutdown), later ones
are ignored → destroy the nodes → rclpy.try_shutdown() (docs/platform.md §1.8).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter

from fowm_core.errors import ConfigError, FowmError

NodeFactory = Callable[[], Node]


@dataclass
class StackResult:
    """What a run left behind: the episode events and the planner's loop statistics."""

    events: list[dict[str, Any]] = field(default_factory=list)
    planner_timing: dict[str, float] = field(default_factory=dict)
    planner_holds: dict[str, int] = field(default_factory=dict)


def spin_nodes(factories: Sequence[NodeFactory], duration_s: float | None = None,
               until: Callable[[list[Node]], bool] | None = None) -> list[Node]:
    """Build the nodes, spin them until shutdown, ``duration_s`` or ``until(nodes)``, clean up.

    rclpy must be initialised; it is shut down on return. Returns the (destroyed) nodes so callers
    can read what they recorded.
    """
    from fowm.ros.shutdown import stop_on_signals

    nodes: list[Node] = []
    executor = SingleThreadedExecutor()
    with stop_on_signals() as stop:            # SIGINT/SIGTERM: leave the loop, clean up, exit 0
        try:
            for factory in factories:
                if stop.is_set():
                    break
                nodes.append(factory())
                executor.add_node(nodes[-1])
            deadline = None if duration_s is None else time.monotonic() + duration_s
            while rclpy.ok() and not stop.is_set() and (
                    deadline is None or time.monotonic() < deadline):
                executor.spin_once(timeout_sec=0.1)
                if until is not None and until(nodes):
                    break
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        finally:
            for node in reversed(nodes):
                node.destroy_node()
            executor.shutdown()
            rclpy.try_shutdown()
    return nodes


def stack_factories(checkpoint: str, lockstep: bool | None = None,
                    overrides: dict[str, dict[str, Any]] | None = None) -> list[NodeFactory]:
    """Factories of the twin, the planner and the episode manager with per-node overrides."""
    from fowm.nodes.episode_manager import EpisodeManagerNode
    from fowm.nodes.planner_node import PlannerNode
    from fowm.nodes.sim_node import SimNode

    per_node: dict[str, dict[str, Any]] = {"fowm_sim": {}, "fowm_planner": {},
                                           "fowm_episode_manager": {}}
    per_node["fowm_planner"]["checkpoint"] = str(checkpoint)
    if lockstep is not None:
        for name, values in per_node.items():
            values["lockstep"] = lockstep
            if name != "fowm_sim":             # the twin owns /clock; the others follow it
                values["use_sim_time"] = lockstep
    for name, values in (overrides or {}).items():
        per_node.setdefault(name, {}).update(values)

    def make(cls: type[Node], name: str) -> NodeFactory:
        params = [Parameter(k, value=v) for k, v in per_node[name].items()]
        return lambda: cls(parameter_overrides=params)

    return [make(SimNode, "fowm_sim"), make(PlannerNode, "fowm_planner"),
            make(EpisodeManagerNode, "fowm_episode_manager")]


def run_stack(config_path: str | Path, checkpoint: str | Path, duration_s: float | None = None,
              bag_dir: str | Path | None = None, *, lockstep: bool | None = None,
              episodes: int | None = None,
              overrides: dict[str, dict[str, Any]] | None = None) -> StackResult:
    """Run twin + planner + episode manager with ``config_path``'s parameters.

    Args:
        config_path: ROS parameter YAML (config/sim.yaml).
        checkpoint: the planner's .safetensors checkpoint.
        duration_s: stop after this many seconds (None: until SIGINT).
        bag_dir: record the run as rosbag2 there (needs fowm's recorder node).
        lockstep: force the clock mode for every node (None: as the YAML says).
        episodes: stop after this many finished episodes.
        overrides: {node name: {parameter: value}} applied over the YAML.
    """
    config_path = Path(config_path)
    if not config_path.is_file():
        msg = f"config {config_path} does not exist; pass e.g. --config config/sim.yaml"
        raise ConfigError(msg)
    # 640×480 images between participants need Fast DDS's large-data transport (§1.7).
    os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    overrides = dict(overrides or {})
    if episodes is not None:
        overrides.setdefault("fowm_episode_manager", {})["num_episodes"] = episodes
    rclpy.init(args=["--ros-args", "--params-file", str(config_path)])
    factories = stack_factories(str(checkpoint), lockstep, overrides)
    learner = None
    if bag_dir is not None:          # record every episode and learn; built first: hear every event
        from fowm.nodes.learner_node import loop_factories, spawn_learner_process
        # The recorder only copies bytes and stays here; the learner gets its own process.
        factories = loop_factories(bag_dir, checkpoint, overrides)[:1] + factories
        learner = spawn_learner_process(bag_dir, checkpoint,
                                        (overrides or {}).get("fowm_learner"), config_path)

    def finished(nodes: list[Node]) -> bool:
        if episodes is None or len(nodes) < len(factories):
            return False
        manager = next(n for n in nodes if n.get_name() == "fowm_episode_manager")
        return sum(e["event"] == "end" for e in manager.events) >= episodes

    try:
        nodes = spin_nodes(factories, duration_s, finished)
    finally:
        if learner is not None:
            from fowm.nodes.learner_node import stop_process
            stop_process(learner)
    result = StackResult()
    for node in nodes:
        if hasattr(node, "events"):
            result.events = list(node.events)
        if hasattr(node, "loop") and hasattr(node, "counters"):
            result.planner_timing = node.loop.stats.summary()
            result.planner_holds = dict(node.counters.holds_by_reason)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fowm run", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/sim.yaml", help="ROS parameter YAML")
    parser.add_argument("--checkpoint", required=True, help="planner checkpoint (.safetensors)")
    parser.add_argument("--duration", type=float, default=None, help="seconds (default: forever)")
    parser.add_argument("--episodes", type=int, default=None, help="stop after N episodes")
    parser.add_argument("--bag-dir", default=None,
                        help="record one rosbag2 per episode here and finetune on them live")
    parser.add_argument("--dataset", default=None,
                        help="offline dataset for the learner's offline half (with --bag-dir)")
    clock = parser.add_mutually_exclusive_group()
    clock.add_argument("--lockstep", dest="lockstep", action="store_true", default=None,
                       help="sim owns /clock and waits for each answer (reproducible)")
    clock.add_argument("--realtime", dest="lockstep", action="store_false",
                       help="step the twin at the control rate on the wall clock")
    args = parser.parse_args(argv)
    try:
        result = run_stack(args.config, args.checkpoint, args.duration, args.bag_dir,
                           lockstep=args.lockstep, episodes=args.episodes,
                           overrides={"fowm_learner": {"dataset_dir": args.dataset}}
                           if args.dataset else None)
    except FowmError as err:
        print(f"fowm run: {err}", file=sys.stderr)
        return 2
    ends = [e for e in result.events if e["event"] == "end"]
    if ends:
        rate = sum(e["success"] for e in ends) / len(ends)
        print(f"{len(ends)} episodes, success rate {rate:.2f}")
    timing = result.planner_timing or {}
    if timing:
        print(f"planner: {timing.get('deadline_misses', 0)} of {timing.get('ticks', 0)} ticks "
              f"missed at {timing.get('rate_hz', 0):.2f} Hz, plan latency median "
              f"{timing.get('latency_ms_median', 0):.0f} ms, p95 "
              f"{timing.get('latency_ms_p95', 0):.0f} ms; holds {result.planner_holds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
