"""Shared by the sim-stack node tests: a tiny checkpoint and a helper node that records topics."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from fowm_core.config import FowmConfig, cpu
from fowm_core.learning.checkpoints import save_agent
from fowm_core.model import WorldModel

os.environ.setdefault("MUJOCO_GL", "egl")


def tiny_config(task: str = "lift", modality: str = "all") -> FowmConfig:
    """The cpu preset shrunk until one plan takes milliseconds (same algorithm, fewer samples)."""
    return cpu(task, modality).with_overrides({
        "planner": {"iterations": 2, "num_samples": 32, "num_elites": 8},
        "model": {"mlp_dim": 32, "enc_dim": 32, "num_channels": 4, "latent_dim": 16}})


def tiny_checkpoint(path: Path, task: str = "lift", modality: str = "all",
                    q_spread: float = 0.0, seed: int = 0, step: int = 0) -> Path:
    """Random weights; q_spread > 0 makes the Q heads disagree (non-zero uncertainty)."""
    torch.manual_seed(seed)
    cfg = tiny_config(task, modality)
    model = WorldModel(cfg.model)
    if q_spread:
        with torch.no_grad():
            for param in model._qs.parameters():
                param.add_(q_spread * torch.randn_like(param))
    save_agent(path, model, cfg, step=step, metrics={})
    return path


class Recorder:
    """Collects (receive order) messages of a subscription: ``rec.msgs``."""

    def __init__(self) -> None:
        self.msgs: list[Any] = []

    def __call__(self, msg: Any) -> None:
        self.msgs.append(msg)


def stamp_ns(msg: Any) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
