"""Image preparation, planned EE path and episode bookkeeping of the live stack."""

from __future__ import annotations

import numpy as np
import pytest

from fowm_core.control import (
    EpisodeTracker,
    planned_ee_path,
    prepare_image,
    uncertainty_rgba,
)
from fowm_core.errors import ConfigError


def test_prepare_image_at_model_size_is_exact() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (84, 84, 3), dtype=np.uint8)
    out = prepare_image(rgb, 84)
    assert out.shape == (3, 84, 84)
    np.testing.assert_array_equal(out, rgb.transpose(2, 0, 1))


def test_prepare_image_centre_crops_then_resizes() -> None:
    rgb = np.zeros((480, 640, 3), np.uint8)
    rgb[:, 80:560] = 200                         # the centre square only
    out = prepare_image(rgb, 84)
    assert out.shape == (3, 84, 84)
    assert (out == 200).all()


def test_prepare_image_rejects_non_rgb() -> None:
    with pytest.raises(ConfigError, match="rgb"):
        prepare_image(np.zeros((4, 4), np.uint8), 84)


def test_planned_path_integrates_scaled_clamped_deltas() -> None:
    mean = np.array([[1.0, 0.0, 0.0, 0.3], [2.0, -0.5, 0.0, 0.0]])   # second x clamps to 1
    path = planned_ee_path(np.array([0.1, 0.2, 0.3]), mean, action_scale_m=0.1)
    np.testing.assert_allclose(path, [[0.1, 0.2, 0.3], [0.2, 0.2, 0.3], [0.3, 0.15, 0.3]])


def test_uncertainty_colour_goes_green_to_red() -> None:
    assert uncertainty_rgba(0.0, 1.0) == (0.0, 1.0, 0.0, 1.0)
    assert uncertainty_rgba(5.0, 1.0) == (1.0, 0.0, 0.0, 1.0)
    assert uncertainty_rgba(float("nan"), 1.0)[:3] == (0.5, 0.5, 0.5)


def _tracker(**kwargs: object) -> EpisodeTracker:
    # reward = -|x|, success when x >= 2: stand-ins with the rewards module's signature
    return EpisodeTracker(task="reach", reward_fn=lambda task, s, a: -abs(s) - float(a.sum()),
                          success_fn=lambda task, s: s >= 2, action_dim=1, **kwargs)


def test_tracker_pairs_actions_with_observation_stamps() -> None:
    tr = _tracker(max_steps=3)
    start = tr.start(episode=4, seed=7)
    assert start["event"] == "start" and start["seed"] == 7 and start["episode"] == 4
    assert tr.observe(100, 0) is None            # first observation: no step yet
    tr.record_action(100, np.array([0.5]))
    assert tr.observe(200, 1) == pytest.approx(-1.5)
    assert tr.observe(300, 1) is None            # no action answered stamp 200: sim did not step
    tr.record_action(300, np.array([0.0]))
    assert tr.observe(400, 2) == pytest.approx(-2.0)
    assert tr.steps == 2 and tr.success and not tr.is_done
    tr.record_action(400, np.array([0.0]))
    tr.observe(500, 1)
    assert tr.is_done and not tr.success         # success is the state at the last step
    end = tr.finish()
    assert end == {"event": "end", "episode": 4, "task": "reach", "seed": 7, "success": False,
                   "terminal": False, "steps": 3, "return": pytest.approx(-4.5)}


def test_tracker_real_time_uses_latest_action_or_zero() -> None:
    tr = _tracker(strict_pairing=False)
    tr.start(0, 0)
    tr.observe(100, 0)
    assert tr.observe(200, 1) == pytest.approx(-1.0)     # no action yet: the arm held (zero)
    tr.record_action(150, np.array([1.0]))
    assert tr.observe(300, 1) == pytest.approx(-2.0)     # newest action before the observation


def test_tracker_ends_on_success_when_asked_and_operator_label_wins() -> None:
    tr = _tracker(end_on_success=True)
    tr.start(0, 0)
    tr.observe(1, 0)
    tr.record_action(1, np.array([0.0]))
    tr.observe(2, 3)
    assert tr.is_done
    assert tr.finish(success=False)["success"] is False


def test_tracker_rejects_zero_length() -> None:
    with pytest.raises(ConfigError, match="max_steps"):
        _tracker(max_steps=0)
