"""Success labels and reward sources in bags: the operator's label is recoverable by a typed
reader, twin bags give simulated per-frame labels, and a classifier replaces the rewards when bags
become replay episodes (offline and online alike)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fowm_core import tasks
from fowm_core.data import labelled, labels
from fowm_core.data.bags import (
    CameraSpec,
    EpisodeLog,
    StepRecord,
    read_dataset,
    read_episode_bag,
    write_episode_bag,
)
from fowm_core.errors import BagError, FowmError
from fowm_core.jobs import workflows
from fowm_core.learning.agent import load_dataset

S0, PERIOD, STEPS = 1_000_000_000, 160_000_000, 4


def _log(success: bool, extra: dict | None = None, near: tuple[int, ...] = ()) -> EpisodeLog:
    """A reach episode with images; the tool is on the goal at the steps in ``near`` (true
    success there), and each image's mean brightness says so (what the fake classifier reads)."""
    rng = np.random.default_rng(0)
    goal = np.array([1.55, 0.29, 0.58])
    records = []
    for t in range(STEPS + 1):
        eef = goal + (0.0 if t in near else 0.2)
        rgb = np.full((3, 84, 84), 200 if t in near else 20, np.uint8)
        records.append(StepRecord(S0 + t * PERIOD, eef, 0.0, rng.uniform(-1, 1, 7), None, goal,
                                  rgb))
    actions = np.zeros((STEPS, 3), np.float32)
    rewards = [tasks.reward("reach", tasks.TaskState(r.eef, 0.0, None, goal), a)
               for r, a in zip(records[1:], actions, strict=True)]
    return EpisodeLog("reach", records, actions, rewards, episode=0, seed=0, success=success,
                      camera=CameraSpec(84, 84, 45.0), extra=dict(extra or {}))


class Bright:
    """Stands in for the success classifier: p = mean brightness / 255."""

    img_size = 84
    key = "bright-v1"

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        self.calls += 1
        assert rgb.dtype == np.uint8 and rgb.shape[1:] == (3, 84, 84)
        return rgb.reshape(len(rgb), -1).mean(1) / 255.0


def test_sources_round_trip_run_length_coded() -> None:
    sources = ["tracker"] * 3 + ["classifier", "label", "label"]
    text = labels.encode_sources(sources)
    assert text == "tracker:3,classifier:1,label:2"
    assert labels.decode_sources(text) == sources
    assert labels.decode_sources("") == []
    for bad in ("tracker:0", "sim:2", "tracker", "tracker:2,"):
        with pytest.raises(FowmError, match="reward_sources part"):
            labels.decode_sources(bad)
    with pytest.raises(FowmError, match="reward source 'sim'"):
        labels.encode_sources(["sim"])


def test_label_steps_get_the_operators_label() -> None:
    sources = ["tracker", "label", "label"]
    got = labels.fill_label_rewards(np.array([-0.3, 0.0, 0.0]), sources, success=True)
    np.testing.assert_allclose(got, [-0.3, 0.0, 1.0])
    got = labels.fill_label_rewards(np.array([-0.3, 0.0, 0.0]), sources, success=False)
    np.testing.assert_allclose(got, [-0.3, 0.0, 0.0])
    with pytest.raises(FowmError, match="names 2 steps but the episode has 3"):
        labels.fill_label_rewards(np.zeros(3), sources[:2], True)


def test_operator_label_is_read_back_typed(tmp_path: Path) -> None:
    extra = {"labelled_by": "operator", "reward_sources": "classifier:2,label:2"}
    write_episode_bag(tmp_path / "op", _log(True, extra))
    label = labels.read_label(tmp_path / "op")
    assert (label.success, label.source, label.task) == (True, "operator", "reach")
    assert label.reward_sources == ("classifier", "classifier", "label", "label")
    ep = read_episode_bag(tmp_path / "op")
    assert ep.info["step_reward_sources"] == list(label.reward_sources)
    assert ep.reward[-1] == 1.0 and ep.reward[2] == 0.0          # the label's steps
    write_episode_bag(tmp_path / "twin", _log(False))
    assert labels.read_label(tmp_path / "twin").source == "computed"


def test_labelled_frames_operator_and_simulated(tmp_path: Path) -> None:
    write_episode_bag(tmp_path / "op_ok", _log(True, {"labelled_by": "operator"}, near=(4,)))
    frames = labelled.labelled_frames(tmp_path / "op_ok", "operator", positive_tail=2)
    np.testing.assert_array_equal(frames.labels, [1.0, 1.0])      # only the tail is known
    write_episode_bag(tmp_path / "op_fail", _log(False, {"labelled_by": "operator"}))
    assert labelled.labelled_frames(tmp_path / "op_fail", "operator").labels.tolist() == [0] * 4
    write_episode_bag(tmp_path / "twin", _log(True, near=(2, 3)))
    with pytest.raises(BagError, match="no operator label"):
        labelled.labelled_frames(tmp_path / "twin", "operator")
    episode = labelled.labelled_frames(tmp_path / "twin", "simulated-episode", positive_tail=1)
    np.testing.assert_array_equal(episode.labels, [1.0])     # the end label, as a person gives it
    frames = labelled.labelled_frames(tmp_path / "twin", "simulated")
    assert frames.source == "simulated" and frames.rgb.shape == (4, 3, 84, 84)
    np.testing.assert_array_equal(frames.labels, [0, 1, 1, 0])    # the true success per step


def test_classifier_replaces_rewards_in_any_obs_mode_and_caches_by_key(tmp_path: Path) -> None:
    write_episode_bag(tmp_path / "data" / "a", _log(True, near=(2, 3)))
    clf = Bright()
    ep = read_episode_bag(tmp_path / "data" / "a", obs_mode="state", image_reward=clf)
    np.testing.assert_allclose(ep.reward, [20 / 255, 200 / 255, 200 / 255, 20 / 255], rtol=1e-6)
    assert "rgb" not in ep.obs and ep.info["reward_source"] == "classifier bright-v1"
    true = read_episode_bag(tmp_path / "data" / "a", obs_mode="state")
    np.testing.assert_array_equal(ep.obs["state"], true.obs["state"])
    first = read_dataset(tmp_path / "data", obs_mode="state", image_reward=clf)
    again = read_dataset(tmp_path / "data", obs_mode="state", image_reward=clf)
    assert clf.calls == 2                                        # the second read hit the cache
    np.testing.assert_array_equal(first.episodes[0].reward, again.episodes[0].reward)
    plain = read_dataset(tmp_path / "data", obs_mode="state")    # a different cache entry
    np.testing.assert_array_equal(plain.episodes[0].reward, true.reward)


def test_pretraining_dataset_takes_the_classifier(tmp_path: Path) -> None:
    write_episode_bag(tmp_path / "a", _log(True, near=(2, 3)))
    cfg = workflows.preset_for("cpu", "reach", "state")
    episodes = load_dataset(tmp_path, cfg, progress=False, image_reward=Bright())
    assert episodes[0].reward.max() == pytest.approx(200 / 255)


def test_cli_offers_the_label_sources_the_reader_knows() -> None:
    from fowm_core.jobs import cli

    assert cli.LABEL_SOURCES == labelled.LABEL_SOURCES


def test_a_robot_bag_without_tracked_poses_is_scored_by_the_classifier(tmp_path: Path) -> None:
    """No goal pose logged (no tracker): recomputing the reward cannot work, the classifier can."""
    log = _log(True, {"labelled_by": "operator", "reward_sources": "label:4"}, near=(4,))
    for step in log.steps:
        step.goal = None
    write_episode_bag(tmp_path / "robot", log)
    with pytest.raises(BagError, match="goal_pose"):
        read_episode_bag(tmp_path / "robot", obs_mode="rgb", recompute_reward=True)
    ep = read_episode_bag(tmp_path / "robot", obs_mode="rgb", recompute_reward=True,
                          image_reward=Bright())
    assert ep.reward[-1] == pytest.approx(200 / 255) and ep.reward[0] == pytest.approx(20 / 255)
    logged = read_episode_bag(tmp_path / "robot", obs_mode="rgb")     # the label's rewards
    np.testing.assert_array_equal(logged.reward, [0, 0, 0, 1])


def test_an_unreadable_bag_is_a_bag_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagError, match="no readable episode events"):
        labels.read_label(tmp_path / "empty")
