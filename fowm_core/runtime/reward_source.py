"""Where a real-mode step's reward comes from (docs/rewards.md), without a simulator.

The decision, per agent step, at the observation's stamp:
  1. ``tracker``: every pose the task's reward reads (object and/or goal, tasks.Task.reward_needs)
     is fresh, i.e. stamped within ``max_pose_age_s`` of the observation: the task's reward and
     success on the tracked poses, as on the twin. With ``latch_goal`` a goal seen earlier in
     this episode stays usable (the goal is fixed within an episode; the object never latches);
     lift's goal is no pose at all but the object's first tracked height this episode;
  2. ``classifier``: else, with a success classifier and a camera image within
     ``max_image_age_s``: its probability in [0, 1] (success: p >= its threshold);
  3. ``label``: else nothing can score the step now: the reward waits for the operator's
     end-of-episode label (a placeholder 0 is published; the bag reader fills it in,
     data.labels.fill_label_rewards).
A lost marker never yields a guessed pose: a stale one is simply not fresh. The episode manager
feeds poses and images in and records each step's source in the end event (``reward_sources``).
No ROS and no torch here: the classifier is any callable image → probability.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fowm_core import tasks
from fowm_core.data import labels
from fowm_core.errors import ConfigError
from fowm_core.runtime.control import param_meta as _p

POSE_KEYS = ("obj", "goal")
POSE_HISTORY = 32          # poses kept per key: a step picks the one nearest its stamp
Classifier = Callable[[np.ndarray], float]       # (3, S, S) uint8 → p(success) in [0, 1]


@dataclass(frozen=True)
class RewardSourceParams:
    max_pose_age_s: float = field(default=0.25, metadata=_p(
        "a tracked pose scores a step when stamped within this of the observation", 0.0, 10.0))
    max_image_age_s: float = field(default=0.25, metadata=_p(
        "the classifier scores a step from an image stamped within this of it", 0.0, 10.0))
    pose_wait_s: float = field(default=0.1, metadata=_p(
        "wall seconds a step waits for the tracker's poses of its own frame before it is "
        "scored with what there is (tracking an image takes tens of ms)", 0.0, 5.0))
    latch_goal: bool = field(default=True, metadata=_p(
        "a goal pose seen this episode scores later steps too (the goal is fixed within an "
        "episode; docs/rewards.md); false: the goal must be as fresh as the object"))


def choose(poses_fresh: bool, image_fresh: bool, has_classifier: bool) -> str:
    """The decision table: tracker > classifier > the operator's label."""
    if poses_fresh:
        return "tracker"
    if has_classifier and image_fresh:
        return "classifier"
    return "label"


def _fresh(stamp_ns: int | None, at_ns: int, max_age_s: float) -> bool:
    return stamp_ns is not None and abs(at_ns - stamp_ns) <= max_age_s * 1e9


@dataclass(frozen=True, eq=False)
class RealObservation:
    """What the arm gives at one agent step (the poses and the image come on their own)."""

    stamp_ns: int
    eef: np.ndarray
    gripper: float


@dataclass(frozen=True)
class Scored:
    reward: float
    success: bool
    source: str


class RewardSelector:
    """Scores real-mode steps from the freshest inputs, one source per step (see module doc).

    ``reward`` and ``success`` have the signatures runtime.control.EpisodeTracker calls."""

    def __init__(self, task: str, classifier: Classifier | None = None, threshold: float = 0.5,
                 params: RewardSourceParams = RewardSourceParams()) -> None:
        spec = tasks.get(task)
        self.task, self.classifier, self.threshold = task, classifier, threshold
        self.params = params
        self.needs = tuple(k for k in POSE_KEYS if k in spec.reward_needs)
        self.uses_init_z = "obj_init_z" in spec.reward_needs
        if not 0.0 <= threshold <= 1.0:
            msg = f"classifier threshold {threshold} is invalid: expected a probability in [0, 1]"
            raise ConfigError(msg)
        self._poses: dict[str, deque[tuple[int, np.ndarray]]] = {
            k: deque(maxlen=POSE_HISTORY) for k in POSE_KEYS}
        self._image: tuple[int, np.ndarray] | None = None
        self._last: tuple[RealObservation, Scored] | None = None
        self.obj_init_z: float | None = None
        self._episode_start_ns: int | None = None     # the episode's first observation's stamp
        self.sources: list[str] = []

    # -- inputs ------------------------------------------------------------------------------------
    def pose(self, key: str, stamp_ns: int, position: np.ndarray) -> None:
        if key not in POSE_KEYS:
            msg = f"pose key {key!r} is invalid: expected one of {POSE_KEYS}"
            raise ConfigError(msg)
        position = np.asarray(position, np.float64).reshape(3)
        if np.all(np.isfinite(position)):             # a non-finite pose is no pose at all
            self._poses[key].append((int(stamp_ns), position))

    def image(self, stamp_ns: int, rgb: np.ndarray) -> None:
        self._image = (int(stamp_ns), rgb)

    def start_episode(self) -> None:
        """Forget the previous episode's sources and the object's initial height."""
        self.sources, self.obj_init_z, self._last = [], None, None
        self._episode_start_ns = None

    # -- scoring -----------------------------------------------------------------------------------
    def _pose_at(self, key: str, at_ns: int) -> np.ndarray | None:
        """The pose nearest ``at_ns`` within max_pose_age_s; else the goal, if latched. Never a
        pose from before the episode's first observation: that was the previous scene (at a
        reset the cube may still be up in the air, or the goal elsewhere)."""
        floor = -1 if self._episode_start_ns is None else self._episode_start_ns
        fresh = [(abs(at_ns - s), s, p) for s, p in self._poses[key]
                 if s >= floor and _fresh(s, at_ns, self.params.max_pose_age_s)]
        if fresh:
            return min(fresh, key=lambda f: (f[0], -f[1]))[2]
        if key == "goal" and self._poses[key] and self._latched(self._poses[key][-1][0], at_ns):
            return self._poses[key][-1][1]
        return None

    def settled(self, stamp_ns: int) -> bool:
        """Whether the tracker has reported on a frame at or after ``stamp_ns`` for every pose
        the reward reads (a latched goal needs no new frame): scoring now cannot miss the pose
        of the step's own frame. A lost marker never settles: ``PendingSteps`` times it out."""
        for key in self.needs:
            newest = self._poses[key][-1][0] if self._poses[key] else None
            if newest is not None and newest >= stamp_ns:
                continue
            if not (key == "goal" and self._latched(newest, stamp_ns)):
                return False
        return True

    def _latched(self, stamp: int | None, at_ns: int) -> bool:
        """A goal pose seen in this episode, before (or just after) ``at_ns``: the goal does not
        move within an episode, so an occluded goal is still where it was last seen. A pose from
        before the episode's first observation may be the previous episode's goal: never."""
        start = self._episode_start_ns
        return (self.params.latch_goal and stamp is not None and start is not None
                and start <= stamp <= at_ns + self.params.max_pose_age_s * 1e9)

    def observation(self, stamp_ns: int, eef: np.ndarray, gripper: float,
                    first: bool = False) -> RealObservation:
        """The step's observation; on the episode's ``first``, the object's height then, if
        tracked (lift's reward reads it)."""
        obs = RealObservation(int(stamp_ns), np.asarray(eef, np.float64), float(gripper))
        if first and self._episode_start_ns is None:
            self._episode_start_ns = obs.stamp_ns
        obj = self._pose_at("obj", obs.stamp_ns)
        if first and obj is not None and self.obj_init_z is None:
            self.obj_init_z = float(obj[2])
        return obs

    def score(self, obs: RealObservation, action: np.ndarray) -> Scored:
        at = obs.stamp_ns
        poses = {k: self._pose_at(k, at) for k in POSE_KEYS}
        if poses["obj"] is not None and self.obj_init_z is None:
            self.obj_init_z = float(poses["obj"][2])     # first sight of the object
        poses_fresh = all(poses[k] is not None for k in self.needs) and (
            not self.uses_init_z or self.obj_init_z is not None)
        image_fresh = self._image is not None and _fresh(self._image[0], at,
                                                         self.params.max_image_age_s)
        source = choose(poses_fresh, image_fresh, self.classifier is not None)
        if source == "tracker":
            state = tasks.TaskState(obs.eef, obs.gripper, poses["obj"], poses["goal"],
                                    self.obj_init_z)
            scored = Scored(float(tasks.reward(self.task, state, action)),
                            bool(tasks.success(self.task, state)), source)
        elif source == "classifier":
            assert self.classifier is not None and self._image is not None
            prob = float(np.clip(self.classifier(self._image[1]), 0.0, 1.0))
            scored = Scored(prob, prob >= self.threshold, source)
        else:
            scored = Scored(0.0, False, source)           # filled from the label by the reader
        self.sources.append(source)
        return scored

    def reward(self, task: str, obs: Any, action: np.ndarray) -> float:
        scored = self.score(obs, action)
        self._last = (obs, scored)
        return scored.reward

    def success(self, task: str, obs: Any) -> bool:
        if self._last is None or self._last[0] is not obs:
            return False
        return self._last[1].success

    def encoded(self) -> str:
        """This episode's sources for the end event (data.labels.encode_sources)."""
        return labels.encode_sources(self.sources)


class PendingSteps:
    """Observations held back until the selector has the tracker's poses of their frames
    (``RewardSelector.settled``) or ``wait_s`` wall seconds have passed, released in order.

    The tracker publishes a frame's pose tens of ms after the frame; scored at once, a step
    would take the previous frame's pose (still "fresh"), off by a step of motion."""

    def __init__(self, selector: RewardSelector, wait_s: float) -> None:
        self.selector, self.wait_s = selector, wait_s
        self._queue: deque[tuple[int, Any, float]] = deque()

    def push(self, stamp_ns: int, item: Any, now_s: float) -> None:
        self._queue.append((int(stamp_ns), item, now_s))

    def due(self, now_s: float) -> list[tuple[int, Any]]:
        out = []
        while self._queue and (self.selector.settled(self._queue[0][0])
                               or now_s - self._queue[0][2] >= self.wait_s):
            stamp, item, _ = self._queue.popleft()
            out.append((stamp, item))
        return out
