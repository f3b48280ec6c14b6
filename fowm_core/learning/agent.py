"""The agent (model, learner, planner) and what both the jobs and the live learner build it from:
its checkpoint (one read, one restore), the offline dataset and the balanced sampler."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from fowm_core.config import FowmConfig, Modality
from fowm_core.data import bags
from fowm_core.data.episode import Episode
from fowm_core.errors import BagError, ConfigError
from fowm_core.learning import checkpoints, replay
from fowm_core.learning.checkpoints import AgentFile, CheckpointInfo
from fowm_core.learning.learner import Learner
from fowm_core.learning.replay import BalancedSampler
from fowm_core.model import WorldModel
from fowm_core.model.device import generator_for, resolve_device
from fowm_core.planner.mppi import Planner


@dataclass
class Agent:
    """The model and the two things that use it: the learner (training) and the planner (acting)."""

    cfg: FowmConfig
    model: WorldModel
    learner: Learner
    planner: Planner
    rng: np.random.Generator

    @classmethod
    def create(cls, cfg: FowmConfig, seed: int = 0,
               device: str | torch.device = "cpu") -> Agent:
        """Weights are initialised on the CPU and then moved, so a seed gives the same initial
        model on every device. The learner's generator (shifts, head pairs) stays on the CPU;
        the planner's lives with the model (model/device.py)."""
        device = resolve_device(device)
        torch.manual_seed(seed)
        model = WorldModel(cfg.model).to(device)
        learner = Learner(model, cfg, generator=torch.Generator().manual_seed(seed + 1))
        planner = Planner(model, cfg, generator=generator_for(device, seed + 2))
        return cls(cfg, model, learner, planner, np.random.default_rng(seed + 3))

    @property
    def device(self) -> torch.device:
        return self.planner.device


def save(agent: Agent, path: str | Path, metrics: Mapping[str, Any],
         extra_meta: Mapping[str, Any] | None = None) -> CheckpointInfo:
    """The agent's whole training state (checkpoints.save_learner)."""
    return checkpoints.save_learner(path, agent.learner, metrics, extra_meta)


def load(path: str | Path, cfg_overrides: dict[str, Any] | None = None, seed: int = 0,
         device: str | torch.device = "cpu") -> Agent:
    """An agent (model, learner state, planner) from a checkpoint, read once, with optional config
    overrides that must not change the model's shape (e.g. planner.uncertainty_cost), on
    ``device`` whatever device it was trained on."""
    return from_checkpoint(checkpoints.read_agent(path), cfg_overrides, seed, device)


def from_checkpoint(ckpt: AgentFile, cfg_overrides: dict[str, Any] | None = None,
                    seed: int = 0, device: str | torch.device = "cpu") -> Agent:
    """``load`` from a checkpoint already read (checkpoints.read_agent)."""
    cfg = ckpt.cfg.with_overrides(cfg_overrides or {})
    if cfg.model != ckpt.cfg.model:
        msg = (f"overrides {cfg_overrides} change the model section of {ckpt.info.path}'s "
               "config; override only what leaves the architecture as it is (planner, learner, "
               "schedule)")
        raise ConfigError(msg)
    agent = Agent.create(cfg, seed=seed, device=device)
    checkpoints.restore_learner(ckpt, agent.learner)
    return agent


def obs_mode(cfg: FowmConfig) -> str:
    """The observation mode episodes are read (and the twin is run) in for this model."""
    return "state" if cfg.model.modality == Modality.STATE else str(cfg.model.modality)


def load_dataset(data: str | Path, cfg: FowmConfig, *, progress: bool = True,
                 image_reward: bags.ImageReward | None = None) -> list[Episode]:
    """The offline episodes; ``image_reward`` (a success classifier) replaces their rewards."""
    extra = {} if image_reward is None else {"image_reward": image_reward}
    read = bags.read_dataset(data, task=cfg.task, obs_mode=obs_mode(cfg),
                             img_size=cfg.model.img_size, progress=progress, **extra)
    for bag, why in read.failures:
        tqdm.write(f"skipped {bag}: {why}")
    if not read.episodes:
        msg = f"no readable episode bags under {data}"
        raise BagError(msg)
    return read.episodes


# The smallest std the state standardisation divides by: a dimension that hardly varies in the
# data (the push gripper, a fixed goal height) is centred, not blown up.
MIN_STATE_STD = 1e-2


def fit_state_norm(agent: Agent, episodes: list[Episode]) -> None:
    """With ``model.state_norm``, set the model's (and its target's) state mean and std from the
    dataset's observations; without it, nothing."""
    if not agent.cfg.model.state_norm:
        return
    states = np.concatenate([ep.obs["state"] for ep in episodes]).astype(np.float64)
    mean = torch.as_tensor(states.mean(0), dtype=torch.float32)
    std = torch.as_tensor(np.maximum(states.std(0), MIN_STATE_STD), dtype=torch.float32)
    for model in (agent.model, agent.learner.target):
        model.set_state_stats(mean, std)


def make_sampler(cfg: FowmConfig, offline: list[Episode]) -> BalancedSampler:
    """The offline buffer filled with the dataset, an empty online buffer, and 50/50 batches."""
    off = replay.offline_buffer(offline, cfg)
    return BalancedSampler(off, replay.online_buffer(cfg), cfg.replay.offline_fraction)
