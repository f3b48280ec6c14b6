"""Pure pieces of the live control stack: the planned EE path for rviz and episode bookkeeping
(steps, reward, success) for the episode manager. Images are resized with
fowm_core.data.convert.resize_rgb, as the bag reader does, so live and logged inputs match.

No ROS and no torch: the nodes in ros2_ws/src/fowm convert messages and call these.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fowm_core.contract.messages import EpisodeEvent
from fowm_core.errors import ConfigError

# Spec §7.1: each env step moves the mocap by a_xyz/20 m and FOWM repeats each action twice, so one
# agent step moves the end effector by up to 0.1 m per unit of normalized action.
DEFAULT_ACTION_SCALE_M = 2 * 0.05


def planned_ee_path(ee_xyz: np.ndarray, plan_mean: np.ndarray,
                    action_scale_m: float = DEFAULT_ACTION_SCALE_M) -> np.ndarray:
    """Predicted EE positions (H+1, 3): the current position, then the plan mean's clamped xyz
    deltas × action_scale_m integrated step by step (what the arm would do if it followed μ)."""
    mean = np.asarray(plan_mean, dtype=np.float64)
    if mean.ndim != 2 or mean.shape[1] < 3:
        msg = f"plan mean must be (H, A>=3), got shape {mean.shape}"
        raise ConfigError(msg)
    deltas = np.clip(mean[:, :3], -1.0, 1.0) * action_scale_m   # (H, 3)
    start = np.asarray(ee_xyz, dtype=np.float64).reshape(1, 3)
    return np.concatenate([start, start + np.cumsum(deltas, axis=0)], axis=0)


def uncertainty_rgba(uncertainty: float, threshold: float) -> tuple[float, float, float, float]:
    """Green (certain) → red (at or above threshold); grey when the value is not finite."""
    if not math.isfinite(uncertainty):
        return (0.5, 0.5, 0.5, 1.0)
    scale = threshold if threshold > 0 else 1.0
    frac = float(np.clip(uncertainty / scale, 0.0, 1.0))
    return (frac, 1.0 - frac, 0.0, 1.0)


def param_meta(description: str, lo: float | None = None,
               hi: float | None = None) -> dict[str, Any]:
    """Dataclass field metadata that fowm.ros.params turns into a ROS parameter descriptor."""
    meta: dict[str, Any] = {"description": description}
    if lo is not None:
        meta["range"] = (lo, hi)
    return meta


RewardFn = Callable[[str, Any, np.ndarray], float]
SuccessFn = Callable[[str, Any], bool]


@dataclass
class EpisodeTracker:
    """Steps, return and success of the running episode, fed with observations and actions.

    One agent step is complete when an observation arrives after an action answering the previous
    observation (actions carry that observation's stamp, docs/design.md). The reward of the step is
    reward(task, state after the step, action), as the learner recomputes it from bags.
    Episodes end after max_steps (docs/algorithm.md §7.1: 25) or, if end_on_success, at the first
    success.
    With strict_pairing (lock-step sim) the action is the one stamped with the previous
    observation, and a new observation without one is still a step: the lock-step twin publishes
    one observation per step and steps on the hold (zeros) when no answer came in time, so
    skipping it would leave the count one short of the twin's and the episode would never end.
    Without strict pairing (real time: the arm runs on its own clock) every new observation is a
    step and its action is the newest one received by then (zeros if none: the arm held).
    """

    task: str
    reward_fn: RewardFn
    success_fn: SuccessFn
    action_dim: int = 4
    max_steps: int = 25
    end_on_success: bool = False
    strict_pairing: bool = True
    episode: int = -1
    seed: int = 0
    steps: int = 0
    ret: float = 0.0
    success: bool = False
    active: bool = False
    _last_obs_stamp: int | None = None
    _first_obs_stamp: int | None = None
    _min_stamp: int = 0
    _actions: dict[int, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_steps < 1:
            msg = (f"max_steps={self.max_steps} is invalid: expected >= 1 "
                   f"(docs/algorithm.md §7.1 uses 25)")
            raise ConfigError(msg)

    def start(self, episode: int, seed: int, min_stamp_ns: int = 0) -> EpisodeEvent:
        """Begin an episode whose observations are stamped >= min_stamp_ns (the reset time), so
        late messages of the previous episode are never counted in this one. Nor is its final
        observation: a real-mode reset time is the node clock's, which under a lock-step twin's
        /clock may still read that observation's stamp."""
        if self._last_obs_stamp is not None:
            min_stamp_ns = max(min_stamp_ns, self._last_obs_stamp + 1)
        self.episode, self.seed, self._min_stamp = episode, seed, min_stamp_ns
        self.steps, self.ret, self.success, self.active = 0, 0.0, False, True
        self._last_obs_stamp = self._first_obs_stamp = None
        for stamp in [s for s in self._actions if s < min_stamp_ns]:
            del self._actions[stamp]
        return self._event("start")

    def record_action(self, stamp_ns: int, action: np.ndarray) -> None:
        """Kept even between episodes: an answer may arrive before the reset call returns."""
        self._actions[stamp_ns] = np.asarray(action, dtype=np.float32)
        while len(self._actions) > 8:           # bounded: only the latest stamps can matter
            self._actions.pop(min(self._actions))

    def is_first(self, stamp_ns: int) -> bool:
        """True when an observation at stamp_ns would be the episode's first."""
        return self.active and self._last_obs_stamp is None and stamp_ns >= self._min_stamp

    def observe(self, stamp_ns: int, state: Any) -> float | None:
        """Feed a synchronized observation; returns the step's reward when it completes one."""
        if (not self.active or self.is_done or stamp_ns < self._min_stamp
                or (self._last_obs_stamp is not None
                and stamp_ns <= self._last_obs_stamp)):
            return None
        prev, self._last_obs_stamp = self._last_obs_stamp, stamp_ns
        if prev is None:
            self._first_obs_stamp = stamp_ns
            return None                       # first observation of the episode
        action = self._action_for(prev)
        reward = float(self.reward_fn(self.task, state, action))
        self.steps += 1
        self.ret += reward
        self.success = bool(self.success_fn(self.task, state))
        return reward

    def _action_for(self, stamp_ns: int) -> np.ndarray:
        if stamp_ns in self._actions:
            return self._actions.pop(stamp_ns) if self.strict_pairing else self._actions[stamp_ns]
        if self.strict_pairing:                   # unanswered: the twin stepped on the hold
            return np.zeros(self.action_dim, dtype=np.float32)
        older = [s for s in self._actions if s <= stamp_ns]
        if not older:
            return np.zeros(self.action_dim, dtype=np.float32)
        return self._actions[max(older)]

    @property
    def is_done(self) -> bool:
        return self.active and (self.steps >= self.max_steps
                                or (self.end_on_success and self.success))

    def finish(self, success: bool | None = None) -> EpisodeEvent:
        """End the episode; ``success`` overrides the computed label (operator label on a robot)."""
        if success is not None:
            self.success = bool(success)
        self.active = False
        return self._event("end")

    def _event(self, kind: str) -> EpisodeEvent:
        event = EpisodeEvent(event=kind, episode=self.episode, task=self.task, seed=self.seed,
                             success=self.success, terminal=False, steps=self.steps,
                             ret=self.ret)
        if kind == "end":
            # The episode's first and last observation stamps (bags.py layout): a recorder cuts
            # the bag to them, the reader ends the episode at final_stamp_ns.
            event = dataclasses.replace(event, first_stamp_ns=self._first_obs_stamp,
                                        final_stamp_ns=self._last_obs_stamp)
        return event
