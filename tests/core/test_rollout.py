"""The one episode loop (data/rollout.py) and its users: the scripted collector, `fowm collect`
and the planner's episodes all run it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fowm_core.data.rollout import rollout
from fowm_core.learning.train import run_episode


class CountingEnv:
    """Observation t; success reported at step 2 only; ends by time limit or terminal."""

    def __init__(self, steps: int = 4, terminal_at: int | None = None) -> None:
        self.steps, self.terminal_at, self.t, self.seeds = steps, terminal_at, 0, []

    def reset(self, *, seed: int | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        self.t = 0
        self.seeds.append(seed)
        return {"state": np.zeros(1, np.float32)}, {"success": False}

    def step(self, action: np.ndarray):
        self.t += 1
        terminated = self.t == self.terminal_at
        obs = {"state": np.full(1, self.t, np.float32)}
        return obs, float(action[0]), terminated, self.t >= self.steps, {"success": self.t == 2}


def test_rollout_keeps_every_observation_action_reward_and_info() -> None:
    env = CountingEnv()
    seen: list[tuple[int, float]] = []

    def policy(t: int, obs: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        seen.append((t, float(obs["state"][0])))
        return np.array([0.5 * t], np.float32)

    run = rollout(env, policy, seed=7)
    assert env.seeds == [7]
    assert seen == [(0, 0.0), (1, 1.0), (2, 2.0), (3, 3.0)]     # acts on the latest observation
    assert len(run.observations) == len(run.infos) == 5 and run.rewards == [0.0, 0.5, 1.0, 1.5]
    assert run.success_any and not run.success and not run.terminated
    ep = run.episode({"seed": 7})
    assert ep.obs["state"][:, 0].tolist() == [0, 1, 2, 3, 4]
    assert ep.action.dtype == np.float32 and ep.reward.dtype == np.float32
    assert ep.info == {"seed": 7} and not ep.terminal and not ep.success


def test_rollout_stops_at_a_true_terminal_and_says_so() -> None:
    run = rollout(CountingEnv(steps=10, terminal_at=3), lambda t, o, i: np.zeros(1), seed=None)
    assert len(run.actions) == 3 and run.terminated and run.episode({}).terminal


class FixedPlanner:
    """Stands in for Planner: records the t0 flags it was called with."""

    def __init__(self) -> None:
        self.t0: list[bool] = []
        self.resets = 0

    def reset(self) -> None:
        self.resets += 1

    def plan(self, obs, *, t0: bool, eval_mode: bool):
        self.t0.append(t0)
        return type("R", (), {"action": np.array([1.0], np.float32)})()


def test_planner_episodes_warm_start_after_the_first_step() -> None:
    planner = FixedPlanner()
    episode, success_any = run_episode(CountingEnv(), planner, eval_mode=True, seed=3)
    assert planner.resets == 1 and planner.t0 == [True, False, False, False]
    assert success_any and episode.info == {"success_any": True, "seed": 3}
    assert episode.reward.tolist() == pytest.approx([1.0] * 4)
