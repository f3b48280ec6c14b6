"""`fowm classifier train | eval` on twin bags, and the reward-source option of the jobs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fowm_core.errors import ConfigError
from fowm_core.jobs import cli, workflows
from fowm_core.learning import success


def test_train_and_eval_from_twin_bags(tmp_path: Path, one_thread: None, capsys) -> None:
    assert cli.main(["collect", "--task", "reach", "--episodes", "3", "--obs", "all",
                     "--out", str(tmp_path / "bags")]) == 0
    capsys.readouterr()
    out = tmp_path / "clf"
    assert cli.main(["classifier", "train", "--data", str(tmp_path / "bags"), "--out", str(out),
                     "--labels", "simulated", "--steps", "5", "--holdout", "0.34"]) == 0
    printed = json.loads(capsys.readouterr().out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["simulated_labels"] is True and metrics["task"] == "reach"
    assert metrics["episodes_train"] == 2 and metrics["episodes_held_out"] == 1
    assert printed["held_out"]["n"] == 25
    clf = success.load(out)
    assert clf.meta["label_source"] == "simulated" and clf.sha256 == metrics["sha256"]
    report = tmp_path / "eval.json"
    assert cli.main(["classifier", "eval", "--classifier", str(out), "--data",
                     str(tmp_path / "bags"), "--out", str(report)]) == 0
    result = json.loads(report.read_text())
    assert result["episodes"] == 3 and result["frames"]["n"] == 75
    # The twin's bags carry no operator label: training on operator labels says so.
    assert cli.main(["classifier", "train", "--data", str(tmp_path / "bags"), "--out",
                     str(tmp_path / "op")]) == 2
    assert "no operator label" in capsys.readouterr().err


def test_reward_source_needs_its_classifier(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs --classifier"):
        workflows.reward_classifier("classifier", None)
    with pytest.raises(ConfigError, match="only it takes one"):
        workflows.reward_classifier("true", tmp_path)
    with pytest.raises(ConfigError, match="reward source 'sim'"):
        workflows.reward_classifier("sim", None)
    assert workflows.reward_classifier("true", None) is None


class _Env:
    def reset(self, *, seed: int | None = None):
        return {"state": np.zeros(3)}, {}

    def step(self, action):
        return {"state": np.zeros(3)}, -0.7, False, False, {"success": True}

    def render(self, width: int, height: int) -> np.ndarray:
        return np.full((height, width, 3), 255, np.uint8)

    def close(self) -> None:
        pass


def test_twin_episodes_get_the_classifiers_reward() -> None:
    class White:
        img_size = 84

        def predict(self, rgb: np.ndarray) -> np.ndarray:
            assert rgb.shape == (3, 84, 84)              # channels first, like the bags
            return np.array([float(rgb.mean() / 255)], np.float32)

    env = workflows.ClassifierRewardEnv(_Env(), White())  # type: ignore[arg-type]
    env.reset(seed=0)
    _, reward, _, _, info = env.step(np.zeros(3))
    assert reward == 1.0 and info["true_reward"] == -0.7 and info["success"] is True
    assert env.true_return == -0.7
