"""The success classifier: it separates a tiny synthetic set with the balanced loss, outputs
probabilities, round-trips through safetensors + JSON (never a pickle) and reports its metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fowm_core.errors import CheckpointError, ConfigError
from fowm_core.learning import success

SIZE = 32
CFG = success.ClassifierConfig(img_size=SIZE, channels=(8, 16), hidden=16)


def _synthetic(n: int, seed: int, positive_fraction: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """Noise images; a success shows a bright square near the centre (rare, as early in an
    episode), a failure the same square in a corner."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 60, (n, 3, SIZE, SIZE), dtype=np.uint8)
    labels = (rng.random(n) < positive_fraction).astype(np.float32)
    for i, y in enumerate(labels):
        r, c = (12, 12) if y else (2, 22)
        rgb[i, 0, r:r + 8, c:c + 8] = 250
    return rgb, labels


@pytest.fixture(scope="module")
def trained(one_thread: None) -> success.SuccessClassifier:
    rgb, labels = _synthetic(240, seed=0)
    clf = success.SuccessClassifier.create(CFG, seed=0)
    info = success.train(clf, rgb, labels, success.TrainConfig(steps=150, batch_size=64, seed=0))
    assert info["pos_weight"] == pytest.approx((labels == 0).sum() / labels.sum())
    return clf


def test_it_separates_held_out_images_with_probabilities(trained) -> None:
    rgb, labels = _synthetic(200, seed=1)
    prob = trained.predict(rgb)
    assert prob.shape == (200,) and prob.dtype == np.float32
    assert np.all((prob >= 0) & (prob <= 1))
    metrics = success.binary_metrics(prob, labels)
    assert metrics["accuracy"] > 0.95 and metrics["recall"] > 0.9, metrics
    assert metrics["auc"] > 0.98
    assert trained.predict(rgb[0]).shape == (1,)          # one (3, S, S) image


def test_round_trip_is_safetensors_and_json(trained, tmp_path: Path) -> None:
    info = trained.save(tmp_path / "clf" / success.FILE_NAME, {"task": "lift",
                                                              "label_source": "simulated"})
    sidecar = json.loads(info.sidecar.read_text())
    assert sidecar["meta"]["kind"] == success.KIND and sidecar["meta"]["task"] == "lift"
    loaded = success.load(tmp_path / "clf")                 # the directory works too
    rgb, _ = _synthetic(16, seed=2)
    np.testing.assert_array_equal(loaded.predict(rgb), trained.predict(rgb))
    assert loaded.sha256 == info.sha256 and info.sha256 in loaded.key


def test_pickles_and_other_checkpoints_are_refused(trained, tmp_path: Path) -> None:
    path = tmp_path / success.FILE_NAME
    trained.save(path)
    torch.save(trained.net.state_dict(), path)              # a pickle in its place
    with pytest.raises(CheckpointError, match="pickle"):
        success.load(path)
    meta_path = path.with_suffix(".json")
    sidecar = json.loads(meta_path.read_text())
    sidecar["meta"]["kind"] = "fowm-agent"
    meta_path.write_text(json.dumps(sidecar))
    with pytest.raises(CheckpointError, match="not a success classifier"):
        success.load(path)


def test_wrong_input_is_named(trained) -> None:
    with pytest.raises(ConfigError, match=r"uint8 \(N, 3, 32, 32\)"):
        trained.predict(np.zeros((2, 3, 84, 84), np.uint8))


def test_metrics() -> None:
    assert success.auc(np.array([0.9, 0.8, 0.1, 0.2]), np.array([1, 1, 0, 0])) == 1.0
    assert success.auc(np.array([0.5, 0.5]), np.array([1, 0])) == 0.5      # ties count half
    assert success.auc(np.array([0.5]), np.array([1])) is None
    m = success.binary_metrics(np.array([0.9, 0.4, 0.6, 0.1]), np.array([1, 1, 0, 0]))
    assert m["confusion"] == {"tp": 1, "fp": 1, "fn": 1, "tn": 1}
    assert m["precision"] == 0.5 and m["recall"] == 0.5 and m["accuracy"] == 0.5
    assert success.pos_weight(np.array([1, 0, 0, 0])) == 3.0
    assert success.pos_weight(np.array([0, 0])) == 1.0


def test_a_classifier_of_another_task_is_refused(trained) -> None:
    trained.meta["task"] = "reach"
    success.check_task(trained, "reach")
    with pytest.raises(ConfigError, match="trained on task 'reach', not 'lift'"):
        success.check_task(trained, "lift")
