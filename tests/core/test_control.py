"""Image preparation, planned EE path and episode bookkeeping of the live stack."""

from __future__ import annotations

import numpy as np
import pytest

from fowm_core.errors import ConfigError
from fowm_core.runtime.control import (
    EpisodeTracker,
    planned_ee_path,
    uncertainty_rgba,
)


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
    assert start.event == "start" and start.seed == 7 and start.episode == 4
    assert tr.observe(100, 0) is None            # first observation: no step yet
    tr.record_action(100, np.array([0.5]))
    assert tr.observe(200, 1) == pytest.approx(-1.5)
    tr.record_action(200, np.array([0.0]))
    assert tr.observe(300, 2) == pytest.approx(-2.0)
    assert tr.steps == 2 and tr.success and not tr.is_done
    tr.record_action(300, np.array([0.0]))
    tr.observe(400, 1)
    assert tr.is_done and not tr.success         # success is the state at the last step
    end = tr.finish()
    assert end.as_dict() == {"event": "end", "episode": 4, "task": "reach", "seed": 7,
                             "success": False, "terminal": False, "steps": 3,
                             "return": pytest.approx(-4.5), "first_stamp_ns": 100,
                             "final_stamp_ns": 400}


def test_tracker_lockstep_counts_an_unanswered_step_as_the_hold() -> None:
    # The lock-step twin publishes one observation per step; with no answer in time it stepped
    # on the hold (zeros). Skipping that step left the count one short of the twin's episode
    # length: the episode never ended and the twin waited for a reset forever.
    tr = _tracker(max_steps=2)
    tr.start(0, 0)
    tr.observe(100, 0)
    assert tr.observe(200, 1) == pytest.approx(-1.0)     # no answer to 100: the hold, counted
    tr.record_action(200, np.array([0.5]))
    assert tr.observe(300, 1) == pytest.approx(-1.5)
    assert tr.is_done and tr.steps == 2


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
    assert tr.finish(success=False).success is False


def test_tracker_rejects_zero_length() -> None:
    with pytest.raises(ConfigError, match="max_steps"):
        _tracker(max_steps=0)


def test_tracker_ignores_observations_before_the_reset_and_keeps_early_answers() -> None:
    tr = _tracker()
    tr.record_action(1000, np.array([0.0]))     # answered before start() ran: kept
    tr.record_action(10, np.array([0.0]))       # previous episode: dropped at start
    tr.start(1, 1, min_stamp_ns=1000)
    assert tr.observe(900, 5) is None           # late message of the previous episode
    assert tr.is_first(1000)
    assert tr.observe(1000, 0) is None
    assert tr.observe(1100, 1) == pytest.approx(-1.0)
    assert tr.observe(1050, 1) is None          # out of order: never counted twice
    assert tr.steps == 1


def test_tracker_never_counts_the_previous_episodes_final_observation() -> None:
    # Real mode under a lock-step /clock: the reset time (the node clock) may still read the
    # stamp of the previous episode's final observation.
    tr = _tracker(max_steps=1)
    tr.start(0, 0, min_stamp_ns=0)
    tr.observe(100, 0)
    tr.observe(260, 1)
    tr.finish()
    tr.start(1, 1, min_stamp_ns=260)
    assert not tr.is_first(260) and tr.observe(260, 1) is None
    assert tr.is_first(420)
