"""The episode manager's real mode against the twin's camera, with no privileged topic.

The stack: fowm_sim in tracker mode (fowm.ros.tracker_mode: the 640x480 tracker camera, its
CameraInfo and the arm; no object or goal publisher), fowm_tracker with the extrinsics of a twin
calibration (`fowm calibrate`'s solver, not the true camera pose), fowm_episode_manager in
``mode: real`` (rewards: runtime.reward_source; no classifier, so tracker else label), and
fowm_recorder writing a bag per episode. Standing in for people (fowm.ros.twin_operator, the
twin's truth, in-process only): the operator resets the twin, confirms and labels each episode
with its true success; the behaviour policy is the task's scripted controller (medium noise) on
the true state. All lock-step on the twin's /clock, one executor, real rclpy.

Per task: the share of steps each source scored (from the bags' end events), the recorded reward
of tracker-scored steps against the twin's true reward of the same step (same action, true
poses), the tracked poses' error, and each episode's success computed from the tracked poses
(the manager's, before the label overrides it) against the truth.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/real_mode_twin.py \\
        --out docs/results/real_mode_twin.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from fowm.nodes.episode_manager import EpisodeManagerNode
from fowm.nodes.recorder_node import RecorderNode
from fowm.nodes.sim_node import SimNode
from fowm.nodes.tracker_node import TrackerNode
from fowm.ros import tracker_mode
from fowm.ros.twin_operator import ScriptedAnswerer, TruthLog, TwinOperator
from geometry_msgs.msg import PoseStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosbags.rosbag2 import Reader

from fowm_core import tasks
from fowm_core.contract import topics
from fowm_core.data import convert, labels
from fowm_core.jobs.calibrate import twin_calibration
from fowm_core.perception import geometry

DEEP = QoSProfile(depth=500, reliability=ReliabilityPolicy.RELIABLE)
PRIVILEGED = (topics.OBJECT_POSE, topics.GOAL_POSE)
# Recorded without the 640x480 stream (23 MB an episode): the rewards, events and poses suffice.
BIG_ERROR = 0.05       # a reward error this large is a branch of the reward flipping, not noise
BAG_TOPICS = tuple(t for t in topics.RECORDED if t not in (topics.COLOR_IMAGE, topics.COLOR_INFO))


@dataclass
class EpisodeResult:
    seed: int
    steps: int
    sources: list[str]
    rewards: list[float]            # as recorded in the bag (label steps: the placeholder 0)
    true_rewards: list[float]       # the twin's reward of the same step: true poses, same action
    tracker_success: bool | None    # the manager's success on its last step; None: not tracker
    true_success: bool              # the twin's (the operator double's label)
    bag: str


@dataclass
class RunResult:
    task: str
    episodes: list[EpisodeResult] = field(default_factory=list)
    publishers: dict[str, list[str]] = field(default_factory=dict)   # privileged topic → nodes
    pose_errors_m: dict[str, list[float]] = field(default_factory=dict)  # "obj"/"goal"
    twin_holds: int = 0             # steps the twin took on the hold (an answer came too late)
    wall_s: float = 0.0


def calibrated_extrinsics(path: Path, poses: int = 30, seed: int = 0) -> tuple[Path, dict]:
    """`fowm calibrate`'s twin run: the solved camera pose (not the true one) as YAML."""
    t_base_cam, summary = twin_calibration(poses=poses, seed=seed)
    geometry.save_extrinsics(path, t_base_cam, {**summary, "source": "twin"})
    return path, summary


def _node(cls: type[Node], **params: Any) -> Node:
    return cls(parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])


def run(task: str, episodes: int, extrinsics: Path, bag_dir: Path, base_seed: int = 0,
        length: int = 25, timeout_s: float = 300.0, seed: int = 0,
        manager_params: dict[str, Any] | None = None) -> RunResult:
    """One real-mode run on the twin (module doc); rclpy must not be initialised."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    rclpy.init()
    ex = SingleThreadedExecutor()
    result, truth = RunResult(task), TruthLog()
    start = time.monotonic()
    try:
        sim = _node(SimNode, task=task, obs_mode="state", lockstep=True, episode_length=length,
                    lockstep_timeout_s=30.0, **tracker_mode.SIM_PARAMS)
        sim.observers.append(truth)
        tracker = _node(TrackerNode, task=task, extrinsics_file=str(extrinsics),
                        use_sim_time=True)
        manager = _node(EpisodeManagerNode, task=task, mode="real", lockstep=True,
                        use_sim_time=True, episode_length=length, num_episodes=episodes,
                        **(manager_params or {}))
        recorder = _node(RecorderNode, bag_dir=str(bag_dir), topics=list(BAG_TOPICS))
        policy = ScriptedAnswerer(task, truth, seed=seed)
        computed: dict[int, bool | None] = {}

        def before_label(episode: int) -> None:     # the manager's own success, pre-label
            last = manager.selector.sources[-1] if manager.selector.sources else "label"
            computed[episode] = manager.tracker.success if last == "tracker" else None

        operator = TwinOperator(task, truth, lambda: manager.waiting_for == "label_success",
                                episodes, base_seed, before_label=before_label,
                                timeout_s=timeout_s)
        probe = Node("fowm_real_mode_probe")
        tracked: dict[str, list[tuple[int, np.ndarray]]] = {"obj": [], "goal": []}
        for key, topic in (("obj", topics.OBJECT_POSE), ("goal", topics.GOAL_POSE)):
            probe.create_subscription(PoseStamped, topic, lambda m, k=key: tracked[k].append(
                (convert.stamp_ns(m), convert.pose_arrays(m)[0])), DEEP)
        for node in (sim, tracker, manager, recorder, policy, operator, probe):
            ex.add_node(node)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not (
                operator.done and len(recorder.stats().written) >= episodes):
            ex.spin_once(timeout_sec=0.01)
        if operator.error or len(recorder.stats().written) < episodes:
            msg = (f"real-mode run of {task} did not finish: operator error "
                   f"{operator.error!r}, {len(recorder.stats().written)} of {episodes} bags, "
                   f"recorder dropped {recorder.stats().dropped}")
            raise RuntimeError(msg)
        result.twin_holds = sim.executed_holds
        result.publishers = {t: sorted(i.node_name for i in probe.get_publishers_info_by_topic(t))
                             for t in PRIVILEGED}
        for key, poses in tracked.items():
            result.pose_errors_m[key] = [
                float(np.linalg.norm(p - getattr(truth.states[s], key)))
                for s, p in poses if s in truth.states and getattr(truth.states[s], key)
                is not None]
        for bag in sorted(recorder.stats().written):
            result.episodes.append(_episode(task, bag, truth, policy.actions, computed,
                                            operator.labels))
    finally:
        for node in list(ex.get_nodes()):
            ex.remove_node(node)
            node.destroy_node()
        ex.shutdown()
        rclpy.try_shutdown()
    result.wall_s = time.monotonic() - start
    return result


def _episode(task: str, bag: Path, truth: TruthLog, actions: dict[int, np.ndarray],
             computed: dict[int, bool | None], true_labels: list[bool]) -> EpisodeResult:
    """One bag against the truth: step k's reward is that of the state at observation k+1 after
    the action answering observation k (the bag layout, fowm_core.data.bags)."""
    end = labels.end_event(bag)
    rewards = []
    with Reader(bag) as reader:
        conns = [c for c in reader.connections if c.topic == topics.REWARD]
        for c, _, raw in reader.messages(connections=conns):
            rewards.append(float(convert.TYPESTORE.deserialize_cdr(raw, c.msgtype).data))
    first, final = end.get("first_stamp_ns"), end.get("final_stamp_ns")
    stamps = sorted(s for s in truth.states if first <= s <= final)
    hold = np.zeros(tasks.get(task).action_dim, np.float32)      # unanswered: the twin held
    true_rewards = [tasks.reward(task, truth.states[b], actions.get(a, hold))
                    for a, b in itertools.pairwise(stamps)]
    episode = int(end.episode)
    return EpisodeResult(seed=int(end.get("seed") or 0), steps=int(end.get("steps")),
                         sources=labels.decode_sources(end.get("reward_sources") or ""),
                         rewards=rewards, true_rewards=[float(r) for r in true_rewards],
                         tracker_success=computed.get(episode),
                         true_success=true_labels[episode], bag=str(bag))


def summary(result: RunResult) -> dict[str, Any]:
    eps = result.episodes
    sources = [s for e in eps for s in e.sources]
    errors = np.array([abs(r - t) for e in eps
                       for r, t, s in zip(e.rewards, e.true_rewards, e.sources, strict=True)
                       if s == "tracker"])
    scored = [e for e in eps if e.tracker_success is not None]

    def stats(values: list[float] | np.ndarray, scale: float = 1.0) -> dict[str, Any]:
        v = np.asarray(values, np.float64) * scale
        return ({"n": len(v), "mean": float(v.mean()), "p95": float(np.percentile(v, 95)),
                 "max": float(v.max())} if len(v) else {"n": 0})

    big = errors > BIG_ERROR

    return {
        "task": result.task, "episodes": len(eps), "steps": len(sources),
        "source_fraction": {s: sources.count(s) / max(len(sources), 1)
                            for s in labels.REWARD_SOURCES},
        "reward_abs_error_tracker_steps": stats(errors),
        f"tracker_steps_error_over_{BIG_ERROR}": float(big.mean()) if len(errors) else None,
        "true_reward_range": [float(min(r for e in eps for r in e.true_rewards)),
                              float(max(r for e in eps for r in e.true_rewards))],
        "tracked_pose_error_mm": {k: stats(v, 1000.0) for k, v in result.pose_errors_m.items()
                                  if v},
        "success_true": [e.true_success for e in eps],
        "success_from_tracker": [e.tracker_success for e in eps],
        "success_agreement": (sum(e.tracker_success == e.true_success for e in scored)
                              / len(scored)) if scored else None,
        "privileged_publishers": result.publishers,
        "twin_hold_steps": result.twin_holds,
        "wall_s": round(result.wall_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["reach", "push", "lift"])
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--no-latch-tasks", nargs="*", default=["reach"],
                        help="also run these tasks with rewards.latch_goal false")
    args = parser.parse_args()
    os.environ.setdefault("ROS_DOMAIN_ID", str(150 + (os.getpid() + 71) % 80))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    with tempfile.TemporaryDirectory() as tmp:
        extrinsics, calib = calibrated_extrinsics(Path(tmp) / "camera.yaml")
        rows = []
        runs = [(t, True) for t in args.tasks] + [(t, False) for t in args.no_latch_tasks]
        for task, latch in runs:
            res = run(task, args.episodes, extrinsics, Path(tmp) / f"{task}_{latch}",
                      manager_params={"rewards.latch_goal": latch})
            rows.append({**summary(res), "latch_goal": latch})
            print(json.dumps(rows[-1]), flush=True)
    out = {"benchmark": "real_mode_twin", "date": time.strftime("%Y-%m-%d"),
           "machine": platform.platform(), "episodes_per_task": args.episodes,
           "calibration": calib, "tasks": rows}
    text = json.dumps(out, indent=1, default=float)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
