"""Tiny data and checkpoints for the loop tests (ingest, hot-swap, learner node, e2e)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from fowm_core.config import FowmConfig
from fowm_core.jobs import workflows
from fowm_core.learning import agent as agents
from fowm_core.learning.agent import Agent
from fowm_core.learning.checkpoints import save_agent
from fowm_core.model import WorldModel

os.environ.setdefault("MUJOCO_GL", "egl")

TINY = {"model": {"latent_dim": 8, "mlp_dim": 32, "enc_dim": 32},
        "planner": {"iterations": 2, "num_samples": 24, "num_elites": 6},
        "learner": {"batch_size": 16},
        "replay": {"online_capacity": 2000},
        "schedule": {"offline_steps": 10}}


def tiny_config(task: str = "lift") -> FowmConfig:
    """The cpu preset for a state-based sim task, shrunk so one update takes milliseconds."""
    return workflows.preset_for("cpu", task, "state").with_overrides(TINY)


def tiny_checkpoint(path: Path, task: str = "lift", seed: int = 0, step: int = 0) -> Path:
    """A whole agent checkpoint (model, target, both Adams) as `fowm pretrain` writes, untrained."""
    agent = Agent.create(tiny_config(task), seed=seed)
    agent.learner.step = step
    return agents.save(agent, path, {}).path


def tiny_model_checkpoint(path: Path, task: str = "lift", seed: int = 0, step: int = 0) -> Path:
    """Model tensors only (what the planner needs)."""
    torch.manual_seed(seed)
    cfg = tiny_config(task)
    save_agent(path, WorldModel(cfg.model), cfg, step=step, metrics={})
    return path


def collect(out: Path, episodes: int, task: str = "lift", seed: int = 0) -> Path:
    """Scripted-policy episode bags (the same writer as `fowm collect`)."""
    workflows.collect(task, episodes, out, seed=seed, progress=False)
    return out
