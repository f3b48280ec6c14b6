"""Learning sanity check: offline FOWM on noisy data, then planning, beats the data's policy.

A 2-d point mass (s' = s + 0.1·a, r = −‖s'‖, 20 steps from a random start in [−1, 1]²) stands in for
a control task small enough to train in seconds. The behaviour policy is mostly random, so its
episodes rarely get near the origin; the world model must learn dynamics, reward and values from
them, and the uncertainty-penalised planner must do clearly better.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fowm_core import config
from fowm_core.data.episode import Episode
from fowm_core.learning.agent import Agent, make_sampler
from fowm_core.learning.train import pretrain

STEPS = 20


def point_mass_episode(rng: np.random.Generator, policy) -> Episode:
    s = rng.uniform(-1, 1, 2).astype(np.float32)
    states, actions, rewards = [s], [], []
    for _ in range(STEPS):
        a = np.clip(policy(s), -1, 1).astype(np.float32)
        s = np.clip(s + 0.1 * a, -2, 2).astype(np.float32)
        states.append(s)
        actions.append(a)
        rewards.append(-float(np.linalg.norm(s)))
    return Episode({"state": np.stack(states)}, np.stack(actions), np.asarray(rewards))


def behaviour(rng: np.random.Generator):
    """80 % uniform random actions, 20 % a noisy step toward the origin: 'medium' data."""
    def act(s: np.ndarray) -> np.ndarray:
        if rng.random() < 0.2:
            return -s / (np.linalg.norm(s) + 1e-6) + rng.normal(0, 0.5, 2)
        return rng.uniform(-1, 1, 2)
    return act


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_offline_training_then_planning_beats_the_behaviour_policy(one_thread) -> None:
    rng = np.random.default_rng(0)
    data = [point_mass_episode(rng, behaviour(rng)) for _ in range(200)]
    data_return = float(np.mean([ep.reward.sum() for ep in data]))

    cfg = config.cpu(task="reach", modality="state", state_dim=2).with_overrides({
        "model": {"action_dim": 2, "latent_dim": 16, "mlp_dim": 64, "enc_dim": 64},
        "planner": {"iterations": 3, "num_samples": 64, "num_elites": 8},
        "learner": {"batch_size": 64, "lr": 1e-3},
    })
    agent = Agent.create(cfg, seed=0)
    pretrain(agent, make_sampler(cfg, data), 800, progress=False)

    eval_rng = np.random.default_rng(123)
    returns = []
    for _ in range(10):
        agent.planner.reset()
        t = 0

        def plan(s: np.ndarray) -> np.ndarray:
            nonlocal t
            action = agent.planner.plan({"state": s}, t0=t == 0, eval_mode=True).action
            t += 1
            return action

        returns.append(float(point_mass_episode(eval_rng, plan).reward.sum()))
    planned = float(np.mean(returns))
    print(f"planned return {planned:.2f} vs behaviour data {data_return:.2f}")
    # Clearly better: the planner removes at least a third of the behaviour policy's cost.
    assert planned > data_return * 2 / 3, (planned, data_return)
