"""The one episode loop: reset an env, act until it ends, keep what happened.

Every producer of episodes on the twin runs it: the scripted collector (sim/scripted.py, and
``fowm collect`` through it) and the planner's episodes (learning/train.py). The env is any
Gymnasium-style env: ``reset(seed=)`` → (obs, info), ``step(a)`` → (obs, r, terminated, truncated,
info); the twin's info carries "success" and "task_state".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from fowm_core.data.episode import Episode

Obs = dict[str, np.ndarray]
# (t, obs, info) → action: the step index, the latest observation and the info that came with it.
Policy = Callable[[int, Obs, dict[str, Any]], np.ndarray]


class Env(Protocol):
    def reset(self, *, seed: int | None = None) -> tuple[Obs, dict[str, Any]]: ...

    def step(self, action: np.ndarray) -> tuple[Obs, float, bool, bool, dict[str, Any]]: ...


@dataclass
class Rollout:
    """One episode as it happened: T+1 observations and infos (reset's first), T actions and
    rewards, and whether it ended in a true terminal state (not a time limit)."""

    observations: list[Obs] = field(default_factory=list)
    infos: list[dict[str, Any]] = field(default_factory=list)
    actions: list[np.ndarray] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    terminated: bool = False

    @property
    def success(self) -> bool:
        """Success after the last step (the reference's evaluation)."""
        return bool(self.infos[-1].get("success", False))

    @property
    def success_any(self) -> bool:
        """Success reported at any step."""
        return any(bool(info.get("success", False)) for info in self.infos[1:])

    def episode(self, info: dict[str, Any]) -> Episode:
        """The Episode record, with ``info`` as its metadata."""
        keys = self.observations[0].keys()
        return Episode(obs={k: np.stack([o[k] for o in self.observations]) for k in keys},
                       action=np.stack(self.actions), reward=np.asarray(self.rewards),
                       terminal=self.terminated, success=self.success, info=info)


def rollout(env: Env, policy: Policy, seed: int | None) -> Rollout:
    """Reset with ``seed`` and step ``policy``'s actions until the env terminates or truncates."""
    obs, info = env.reset(seed=seed)
    out = Rollout([obs], [info])
    done = False
    while not done:
        action = policy(len(out.actions), obs, info)
        obs, reward, terminated, truncated, info = env.step(action)
        out.observations.append(obs)
        out.infos.append(info)
        out.actions.append(action)
        out.rewards.append(reward)
        done = terminated or truncated
    out.terminated = bool(terminated)
    return out
