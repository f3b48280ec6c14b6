"""Real-mode reward sources: tracker poses when fresh, else the classifier on a fresh image, else
the operator's label; one source per step, recorded for the bag."""

from __future__ import annotations

import numpy as np
import pytest

from fowm_core import tasks
from fowm_core.data import labels
from fowm_core.errors import ConfigError
from fowm_core.runtime.control import EpisodeTracker
from fowm_core.runtime.reward_source import (
    PendingSteps,
    RewardSelector,
    RewardSourceParams,
    choose,
)

MS = 1_000_000
GOAL = np.array([1.55, 0.29, 0.58])
IMAGE = np.zeros((3, 84, 84), np.uint8)


@pytest.mark.parametrize(("poses", "image", "clf", "expected"), [
    (True, True, True, "tracker"),
    (True, False, False, "tracker"),
    (False, True, True, "classifier"),
    (False, False, True, "label"),
    (False, True, False, "label"),
    (False, False, False, "label"),
])
def test_decision_table(poses: bool, image: bool, clf: bool, expected: str) -> None:
    assert choose(poses, image, clf) == expected


def _selector(task: str = "reach", prob: float | None = 0.8,
              latch_goal: bool = False) -> RewardSelector:
    classifier = None if prob is None else (lambda rgb: prob)
    return RewardSelector(task, classifier, 0.5, RewardSourceParams(
        max_pose_age_s=0.1, max_image_age_s=0.1, latch_goal=latch_goal))


def test_fresh_goal_scores_with_the_task_reward() -> None:
    sel = _selector()
    sel.pose("goal", 1000 * MS, GOAL)
    obs = sel.observation(1050 * MS, GOAL + 0.01, 0.0)
    action = np.array([0.1, 0.0, 0.0])
    assert sel.reward("reach", obs, action) == tasks.reward(
        "reach", tasks.TaskState(GOAL + 0.01, 0.0, None, GOAL), action)
    assert sel.success("reach", obs) is True
    assert sel.sources == ["tracker"]


def test_stale_or_lost_pose_falls_back_to_classifier_then_label() -> None:
    sel = _selector(prob=0.8)
    sel.pose("goal", 1000 * MS, GOAL)
    sel.image(1290 * MS, IMAGE)
    obs = sel.observation(1300 * MS, GOAL, 0.0)            # pose 300 ms old: stale
    assert sel.reward("reach", obs, np.zeros(3)) == pytest.approx(0.8)
    assert sel.success("reach", obs) is True                # p >= threshold
    obs = sel.observation(1600 * MS, GOAL, 0.0)             # image 310 ms old: stale too
    assert sel.reward("reach", obs, np.zeros(3)) == 0.0
    assert sel.success("reach", obs) is False
    sel.pose("goal", 1700 * MS, np.array([np.nan, 0, 0]))   # a non-finite pose is no pose
    assert sel.reward("reach", sel.observation(1700 * MS, GOAL, 0.0), np.zeros(3)) == 0.0
    assert sel.sources == ["classifier", "label", "label"]
    assert sel.encoded() == "classifier:1,label:2"
    no_clf = _selector(prob=None)
    no_clf.image(1000 * MS, IMAGE)
    assert no_clf.reward("reach", no_clf.observation(1000 * MS, GOAL, 0.0), np.zeros(3)) == 0.0
    assert no_clf.sources == ["label"]


def test_lift_needs_the_object_and_its_initial_height() -> None:
    sel = _selector("lift", prob=None)
    assert sel.needs == ("obj",) and sel.uses_init_z
    start = np.array([1.5, 0.3, 0.56])
    sel.pose("obj", 0, start)
    sel.observation(0, start + 0.1, 0.0, first=True)
    assert sel.obj_init_z == pytest.approx(0.56)
    lifted = start + np.array([0, 0, 0.1])
    sel.pose("obj", 160 * MS, lifted)
    obs = sel.observation(160 * MS, lifted, 0.8)
    action = np.array([0.0, 0.0, 1.0, 1.0])
    expected = tasks.reward("lift", tasks.TaskState(lifted, 0.8, lifted, None, 0.56), action)
    assert sel.reward("lift", obs, action) == pytest.approx(expected)
    sel.start_episode()
    assert sel.sources == [] and sel.obj_init_z is None


def test_the_episode_tracker_records_one_source_per_step() -> None:
    sel = _selector(prob=0.3)
    tracker = EpisodeTracker(task="reach", reward_fn=sel.reward, success_fn=sel.success,
                             action_dim=3, max_steps=3, strict_pairing=False)
    tracker.start(0, 0)
    sel.start_episode()
    rewards = []
    for t in range(4):
        stamp = (t + 1) * 160 * MS
        if t == 1:
            sel.pose("goal", stamp, GOAL)
        if t >= 2:
            sel.image(stamp, IMAGE)
        rewards.append(tracker.observe(stamp, sel.observation(stamp, GOAL + 0.2, 0.0, t == 0)))
    assert rewards[0] is None and rewards[3] == pytest.approx(0.3)
    assert labels.decode_sources(sel.encoded()) == ["tracker", "classifier", "classifier"]
    assert tracker.is_done and tracker.success is False


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ConfigError, match=r"threshold 1\.5"):
        RewardSelector("reach", None, 1.5)
    with pytest.raises(ConfigError, match="pose key 'cube'"):
        _selector().pose("cube", 0, GOAL)


def test_a_goal_seen_this_episode_latches_but_the_object_never_does() -> None:
    sel = _selector("push", prob=None, latch_goal=True)
    obj = np.array([1.5, 0.3, 0.56])
    sel.pose("goal", 900 * MS, GOAL + 1.0)              # the previous episode's goal
    sel.start_episode()
    sel.pose("obj", 1000 * MS, obj)
    sel.observation(1000 * MS, obj, 0.0, first=True)
    obs = sel.observation(1160 * MS, obj, 0.0)
    sel.pose("obj", 1160 * MS, obj)
    assert sel.reward("push", obs, np.zeros(3)) == 0.0   # an old episode's goal never latches
    sel.pose("goal", 1160 * MS, GOAL)                    # seen once in this episode ...
    sel.pose("obj", 1800 * MS, obj)
    obs = sel.observation(1800 * MS, obj, 0.0)           # ... 640 ms ago: stale, but latched
    expected = tasks.reward("push", tasks.TaskState(obj, 0.0, obj, GOAL), np.zeros(3))
    assert sel.reward("push", obs, np.zeros(3)) == pytest.approx(expected)
    obs = sel.observation(2400 * MS, obj, 0.0)           # the object 600 ms old: not scored
    assert sel.reward("push", obs, np.zeros(3)) == 0.0
    assert sel.sources == ["label", "tracker", "label"]
    sel.start_episode()                                  # a new episode forgets the goal
    sel.pose("obj", 3000 * MS, obj)
    sel.observation(3000 * MS, obj, 0.0, first=True)
    assert sel.reward("push", sel.observation(3000 * MS, obj, 0.0), np.zeros(3)) == 0.0


def test_a_step_takes_the_pose_nearest_its_stamp() -> None:
    sel = _selector("lift", prob=None)
    for t, z in ((840, 0.55), (1000, 0.56), (1160, 0.70)):
        sel.pose("obj", t * MS, np.array([1.5, 0.3, z]))
    sel.observation(1000 * MS, np.zeros(3), 0.0, first=True)
    assert sel.obj_init_z == pytest.approx(0.56)         # not the newest (0.70) nor 0.55


def test_pending_steps_wait_for_their_frames_poses_or_time_out() -> None:
    sel = _selector("push", prob=None)
    pending = PendingSteps(sel, wait_s=0.1)
    pending.push(1000 * MS, "a", now_s=10.0)
    pending.push(1160 * MS, "b", now_s=10.05)
    sel.pose("goal", 1000 * MS, GOAL)
    assert pending.due(10.02) == []                     # the object's pose of frame a: not yet
    sel.pose("obj", 1000 * MS, GOAL)
    assert pending.due(10.03) == [(1000 * MS, "a")]     # b waits for frame b's poses, in order
    assert not sel.settled(1160 * MS)
    assert pending.due(10.16) == [(1160 * MS, "b")]     # a lost marker: released after wait_s


def test_no_pose_from_before_the_episodes_first_observation() -> None:
    sel = _selector("lift", prob=None)
    sel.pose("obj", 950 * MS, np.array([1.5, 0.3, 0.71]))   # the last episode's lifted cube
    sel.start_episode()
    sel.observation(1000 * MS, np.zeros(3), 0.0, first=True)
    assert sel.obj_init_z is None                           # fresh by age, but not this scene
    assert sel.reward("lift", sel.observation(1000 * MS, np.zeros(3), 0.0),
                      np.zeros(4)) == 0.0 and sel.sources == ["label"]
