"""Honest and hostile weights for the trust tests: consecutive checkpoints of a real (tiny)
finetuning run on reach bags, and the fault-injection campaign's attacks built from a live model."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fowm_core.config import FowmConfig
from fowm_core.jobs import workflows
from fowm_core.learning.agent import Agent, make_sampler
from fowm_core.learning.train import update_once
from fowm_core.model import WorldModel
from helpers.loop import TINY, collect

# The attack drove the arm to (−0.88, +0.92, +0.88): reward ∝ this direction · action.
ATTACK_DIRECTION = (-1.0, 1.0, 1.0)


def reach_config() -> FowmConfig:
    return workflows.preset_for("cpu", "reach", "state").with_overrides(TINY)


@dataclass
class Run:
    """A finetuning run: the model every ``every`` updates, and real observations of the data."""

    cfg: FowmConfig
    snapshots: dict[int, WorldModel]
    observations: list[dict[str, np.ndarray]]


def honest_run(data_dir: Path, steps: int = 300, every: int = 25, episodes: int = 4,
               seed: int = 0) -> Run:
    """Scripted reach bags, then ``steps`` balanced updates of the tiny model (one checkpoint per
    25 updates is what the live learner writes after each 25-step episode)."""
    cfg = reach_config()
    collect(data_dir, episodes, task="reach", seed=seed)
    episodes_read = workflows.load_dataset(data_dir, cfg, progress=False)
    agent = Agent.create(cfg, seed=seed)
    sampler = make_sampler(cfg, episodes_read)
    snapshots = {}
    for step in range(steps + 1):
        if step % every == 0:
            snapshots[step] = copy.deepcopy(agent.model).eval()
        if step < steps:
            update_once(agent, sampler)
    observations = [{"state": ep.obs["state"][t]} for ep in episodes_read
                    for t in range(2, len(ep.obs["state"]), 6)]
    return Run(cfg, snapshots, observations)


def biased_reward(model: WorldModel, scale: float, direction=ATTACK_DIRECTION,
                  steps: int = 300, seed: int = 0) -> WorldModel:
    """The model with its reward head refit to scale · (direction · a): a planner using it pushes
    the arm one way whatever it sees. Everything else (encoder, dynamics, Q heads) unchanged."""
    out = copy.deepcopy(model).train()
    g = torch.Generator().manual_seed(seed)
    d = torch.tensor(direction[:model.cfg.action_dim], dtype=torch.float32)
    head = out._reward
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    for _ in range(steps):
        z = torch.rand(256, model.cfg.latent_dim, generator=g)
        a = torch.rand(256, model.cfg.action_dim, generator=g) * 2 - 1
        loss = ((head(torch.cat([z, a], -1)).squeeze(-1) - scale * (a @ d)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    out.weights_version += 1
    return out.eval().requires_grad_(False)


def random_weights(model: WorldModel, seed: int = 0) -> WorldModel:
    """Every parameter replaced by N(0, 1) draws."""
    out = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return out.eval()


def scaled(model: WorldModel, factor: float) -> WorldModel:
    """Every parameter × factor (the campaign used 20)."""
    out = copy.deepcopy(model)
    with torch.no_grad():
        for p in out.parameters():
            p.mul_(factor)
    return out.eval()


def fresh(cfg: FowmConfig, seed: int = 3) -> WorldModel:
    """An untrained model (Q heads' last layers are zero: every head agrees, uncertainty 0)."""
    torch.manual_seed(seed)
    return WorldModel(cfg.model).eval()
