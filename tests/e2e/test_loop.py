"""The closed loop on the twin, real rclpy and real bag files: twin episodes → recorder bags →
learner ingests → new checkpoint announced → planner validates and hot-swaps between ticks, in
real time, with no missed control tick; the live-weights topic follows the swaps.

The learner runs in its own process at nice 10, as `fowm run --bag-dir` runs it: in the planner's
process its Python work would compete with the control thread for the GIL, and a two-core
machine then misses a tick now and then. What it did is read from its announcements on
/fowm/weights and from its work directory (ledger, checkpoints), as the run's report reads it."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import rclpy
import torch
from fowm.bringup import (
    learner_report,
    loop_factories,
    merged,
    spawn_learner_process,
    stack_factories,
    stop_process,
    trust_overrides,
)
from helpers.loop import collect, tiny_checkpoint
from helpers.spin import spin_until
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

from fowm_core.contract import topics
from fowm_core.data import bags
from fowm_core.learning import checkpoints
from fowm_core.runtime import trust
from fowm_core.runtime.ledger import BagLedger

REPO = Path(__file__).resolve().parents[2]

EPISODES, LENGTH = 3, 8


def test_episodes_become_bags_then_checkpoints_that_the_planner_swaps_in_without_missing_a_tick(
        executor: SingleThreadedExecutor, tmp_path: Path) -> None:
    spin = partial(spin_until, executor)
    torch.set_num_threads(1)
    dataset = collect(tmp_path / "dataset", 3)
    start = tiny_checkpoint(tmp_path / "pre.safetensors")
    bag_dir = tmp_path / "bags"
    overrides = {
        "fowm_sim": {"task": "lift", "obs_mode": "state", "episode_length": LENGTH},
        "fowm_planner": {"eval_mode": False},
        "fowm_episode_manager": {"task": "lift", "episode_length": LENGTH,
                                 "num_episodes": EPISODES, "service_timeout_s": 30.0},
        "fowm_learner": {"dataset_dir": str(dataset), "poll_s": 0.1},
        "fowm_recorder": {"grace_s": 0.3}}
    # As `fowm run --bag-dir`: a fresh 0600 lab key; the planner trusts the learner's checkpoints.
    work_dir = bag_dir / ".learner"
    overrides = merged(trust_overrides(work_dir), overrides)
    recorder_factory = loop_factories(bag_dir, start, overrides)[0]
    factories = [recorder_factory, *stack_factories(str(start), lockstep=False,
                                                    overrides=overrides)]
    nodes = {}
    for factory in factories:
        node = factory()
        nodes[node.get_name()] = node
        executor.add_node(node)
    messages: list[dict] = []
    probe = rclpy.create_node("weights_probe")
    probe.create_subscription(
        String, topics.WEIGHTS, lambda m: messages.append(json.loads(m.data)),
        QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                   reliability=ReliabilityPolicy.RELIABLE,
                   durability=DurabilityPolicy.TRANSIENT_LOCAL))
    executor.add_node(probe)
    planner, recorder = nodes["fowm_planner"], nodes["fowm_recorder"]
    swapper = planner.weights.swapper
    learner = spawn_learner_process(bag_dir, start, overrides["fowm_learner"])

    def announced() -> list[dict]:
        return [m for m in messages if m.get("role") == "learner"]

    def done() -> bool:
        report, newest = learner_report(work_dir), announced()[-1:]
        return (report.ingested >= EPISODES - 1
                and report.trained_episodes == report.ingested     # no update owed
                and bool(newest) and newest[0]["path"] == report.checkpoint
                and swapper.stats.swaps >= 1
                and planner.weights.live.sha256 == newest[0]["sha256"])

    try:
        finished = spin(lambda: learner.poll() is not None or done(), timeout_s=240)
        assert finished and learner.poll() is None, (
            learner.poll(), learner_report(work_dir), recorder.written,
            nodes["fowm_episode_manager"].events)
        assert spin(lambda: any(m.get("live") and m["sha256"] == swapper.live.sha256
                                for m in messages), timeout_s=10)
        timing = planner.loop.stats.summary()
    finally:
        exit_code = stop_process(learner)
    assert exit_code == 0                        # SIGINT: a clean stop
    # Every bag on disk is a whole episode that the learner ingested once.
    ledger = BagLedger(work_dir / "ledger.json")
    names = sorted(e.name for e in ledger.ingested)
    assert names == sorted(p.name for p in recorder.written)[: len(names)]
    assert not ledger.failed
    for path in recorder.written:
        assert len(bags.read_episode_bag(path, obs_mode="state", recompute_reward=True)) > 0
    # The planner plans with one of the learner's checkpoints (done() saw it live on the newest;
    # the learner may have moved on since), which loads whole.
    by_sha = {a["sha256"]: a for a in announced()}
    assert swapper.live.sha256 in by_sha
    assert swapper.live.step == by_sha[swapper.live.sha256]["step"]
    checkpoints.load_checkpoint(swapper.live.path)
    assert not swapper.stats.refused
    # The live-weights topic went from the pretrained weights to the new ones.
    lives = [m for m in messages if m.get("live")]
    key = trust.load_key(work_dir / "lab.key")
    assert all(trust.authentic_live(key, m) for m in lives)           # signed by the planner
    assert all(trust.verify(key, a, a["signature"]) for a in announced())
    assert lives[0]["path"] == str(start) and lives[0]["swaps"] == 0
    assert lives[-1]["sha256"] in by_sha and lives[-1]["swaps"] >= 1
    # Real time, 6.25 Hz: not one control tick missed, swaps included.
    assert timing["ticks"] >= (EPISODES - 1) * LENGTH
    assert timing["deadline_misses"] == 0, timing
