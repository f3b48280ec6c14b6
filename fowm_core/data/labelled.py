"""Classifier training data from episode bags (docs/rewards.md): the image after each step with
a 0/1 success label from one of two sources:
  - ``operator``: the operator's episode label (data.labels.read_label; a failed episode: every
    frame 0; a successful one: its last ``positive_tail`` frames 1, the others left out, since
    success may come late);
  - ``simulated``: the true success of every step, recomputed from the twin's object/goal poses
    (tasks.success). Only the twin has those poses, so these labels are marked simulated;
  - ``simulated-episode``: labels as an operator gives them (one per episode, as ``operator``),
    taken from the twin's end-of-episode success instead of a person: what a lab's labels buy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fowm_core import tasks
from fowm_core.data.bags import read_episode_bag
from fowm_core.data.labels import read_label
from fowm_core.errors import BagError, FowmError

LABEL_SOURCES = ("operator", "simulated", "simulated-episode")


@dataclass
class LabelledFrames:
    """Images (N, 3, S, S) uint8, labels (N,) 0/1, and the index of each frame's episode."""

    rgb: np.ndarray
    labels: np.ndarray
    episode: np.ndarray
    source: str

    @classmethod
    def concat(cls, parts: Sequence[LabelledFrames], source: str) -> LabelledFrames:
        if not parts:
            return cls(np.zeros((0, 3, 84, 84), np.uint8), np.zeros(0, np.float32),
                       np.zeros(0, np.int64), source)
        return cls(np.concatenate([p.rgb for p in parts]),
                   np.concatenate([p.labels for p in parts]),
                   np.concatenate([np.full(len(p.labels), i) for i, p in enumerate(parts)]),
                   source)


def _success_reward(task: str, state: Any, action: np.ndarray) -> float:
    return float(tasks.success(task, state))


def labelled_frames(bag: str | Path, source: str, *, img_size: int = 84,
                    positive_tail: int = 3) -> LabelledFrames:
    """One bag's frames after each step (1..T) with their labels from ``source``."""
    if source not in LABEL_SOURCES:
        msg = f"label source {source!r} is invalid: expected one of {LABEL_SOURCES}"
        raise FowmError(msg)
    if source == "simulated":
        ep = read_episode_bag(bag, obs_mode="all", recompute_reward=True, img_size=img_size,
                              reward_fn=_success_reward)
        labels = ep.reward
        keep = np.ones(len(labels), bool)
    else:
        label = read_label(bag)
        if label.source != "operator" and source == "operator":
            msg = (f"bag {bag} has no operator label (its end event lacks labelled_by: "
                   "operator); label it with the episode manager's ~/label_success, or use "
                   "simulated labels on twin bags")
            raise BagError(msg)
        ep = read_episode_bag(bag, obs_mode="all", img_size=img_size)
        steps = len(ep.action)
        labels = np.zeros(steps, np.float32)
        keep = np.ones(steps, bool)
        if label.success:
            tail = max(1, min(positive_tail, steps))
            labels[-tail:] = 1.0
            keep[:-tail] = False
    frames = ep.obs["rgb"][1:]
    return LabelledFrames(frames[keep], np.asarray(labels, np.float32)[keep],
                          np.zeros(int(keep.sum()), np.int64), source)
