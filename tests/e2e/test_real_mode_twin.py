"""The episode manager's real mode against the twin's camera with no privileged topic: every
object/goal pose comes from fowm_tracker (calibrated extrinsics), rewards from the tracker
(docs/rewards.md "Real mode on the twin"). The run is benchmarks/real_mode_twin.py's, on push."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from benchmarks import real_mode_twin as rm
from fowm_core.data import labels

EPISODES = 3


def test_push_in_real_mode_scores_from_the_tracker(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    monkeypatch.setenv("ROS_DOMAIN_ID", str(150 + (os.getpid() + 61) % 80))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    extrinsics, calib = rm.calibrated_extrinsics(tmp_path / "camera.yaml")
    assert calib["error_vs_truth_mm"] > 0.1        # the solved pose, not the twin's true one
    result = rm.run("push", EPISODES, extrinsics, tmp_path / "bags", timeout_s=75)

    # No privileged pose topic: the tracker is the only publisher of either.
    assert result.publishers == {t: ["fowm_tracker"] for t in rm.PRIVILEGED}
    assert len(result.episodes) == EPISODES
    for ep in result.episodes:
        label = labels.read_label(ep.bag)          # the bag's own end event
        assert label.source == "operator"
        assert label.reward_sources is not None and len(label.reward_sources) == ep.steps == 25
        assert label.reward_sources.count("tracker") > 0.8 * ep.steps
        assert len(ep.rewards) == len(ep.true_rewards) == ep.steps

    # Recorded rewards against the twin's truth: push's reward −2(‖obj − goal‖ + c‖a‖²) moves
    # at most 2 × (object error + goal error) with the tracked poses' errors, measured here.
    obj, goal = (np.array(result.pose_errors_m[k]) for k in ("obj", "goal"))
    err = np.array([abs(r - t) for ep in result.episodes
                    for r, t, s in zip(ep.rewards, ep.true_rewards, ep.sources, strict=True)
                    if s == "tracker"])
    assert err.mean() <= 2 * (obj.mean() + goal.mean())
    assert np.percentile(err, 95) <= 2 * (np.percentile(obj, 95) + np.percentile(goal, 95))
    assert err.max() > 0                         # the tracked poses, not the simulator's
    scored = [ep for ep in result.episodes if ep.tracker_success is not None]
    assert scored and all(ep.tracker_success == ep.true_success for ep in scored)


def test_reach_without_the_goal_latch_falls_back_to_the_label(monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    """The tool hides reach's goal for most of an episode: without the latch those steps are the
    label's (a placeholder 0 on the wire), never a guessed reward; the seen ones the tracker's."""
    monkeypatch.setenv("ROS_DOMAIN_ID", str(150 + (os.getpid() + 67) % 80))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    extrinsics, _ = rm.calibrated_extrinsics(tmp_path / "camera.yaml")
    result = rm.run("reach", 1, extrinsics, tmp_path / "bags", timeout_s=60,
                    manager_params={"rewards.latch_goal": False})
    (ep,) = result.episodes
    assert "label" in ep.sources and "tracker" in ep.sources
    for recorded, true, source in zip(ep.rewards, ep.true_rewards, ep.sources, strict=True):
        if source == "label":
            assert recorded == 0.0
        else:         # reach's reward moves at most 2 × the goal's error
            assert abs(recorded - true) <= 2 * max(result.pose_errors_m["goal"]) + 1e-6


def test_fowm_run_real_mode_with_the_planner(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    """`fowm run --tracker FILE --real-mode`: the planner acts on tracked poses, the episode
    manager scores from the tracker, the twin confirms and labels; every step is counted."""
    from fowm.bringup import run_stack
    from helpers.loop import tiny_checkpoint

    monkeypatch.setenv("ROS_DOMAIN_ID", str(150 + (os.getpid() + 73) % 80))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    extrinsics, _ = rm.calibrated_extrinsics(tmp_path / "camera.yaml")
    ckpt = tiny_checkpoint(tmp_path / "tiny.safetensors", "push")
    length = 6
    overrides = {"fowm_sim": {"episode_length": length},
                 "fowm_episode_manager": {"episode_length": length, "service_timeout_s": 60.0}}
    result = run_stack(Path(__file__).resolve().parents[2] / "config" / "sim.yaml", ckpt,
                       duration_s=90, lockstep=True, episodes=2, overrides=overrides,
                       tracker_extrinsics=extrinsics, real_mode=True)
    assert [e["steps"] for e in result.ends] == [length, length]
    for end in result.ends:
        assert end["labelled_by"] == "operator"
        sources = labels.decode_sources(end["reward_sources"])
        assert sources.count("tracker") > len(sources) / 2
    assert set(result.planner_holds) <= {"no_observation"}, result.planner_holds
