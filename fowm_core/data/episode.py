"""The episode record shared by the twin, the bag codec, replay and the learner.

An episode of T agent steps holds T+1 observations (the last is the observation after the last
action), T actions and T rewards. ``terminal`` is True only for a true terminal state; a time-limit
end is a truncation and keeps the bootstrap (docs/algorithm.md §6, §13.6).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fowm_core.errors import FowmError


@dataclass
class Episode:
    obs: dict[str, np.ndarray]          # "state": (T+1, S) float32; "rgb": (T+1, 3, H, W) uint8
    action: np.ndarray                  # (T, A) float32 in [-1, 1]
    reward: np.ndarray                  # (T,) float32
    terminal: bool = False              # True only if the last state is a true terminal
    success: bool = False
    info: dict[str, Any] = field(default_factory=dict)   # task, seed, stamps, source bag, ...

    def __post_init__(self) -> None:
        self.action = np.asarray(self.action, dtype=np.float32)
        self.reward = np.asarray(self.reward, dtype=np.float32).reshape(-1)
        steps = len(self.action)
        if len(self.reward) != steps:
            msg = f"episode has {steps} actions but {len(self.reward)} rewards"
            raise FowmError(msg)
        if not self.obs:
            msg = "episode has no observations"
            raise FowmError(msg)
        for key, value in self.obs.items():
            if len(value) != steps + 1:
                msg = (f"episode observation '{key}' has {len(value)} entries; "
                       f"expected {steps + 1} (one more than the {steps} actions)")
                raise FowmError(msg)

    def __len__(self) -> int:
        return len(self.action)
