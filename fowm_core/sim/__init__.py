"""The simulation twin: the reference's simxarm tasks (reach, push, lift) on the mujoco package.

``make_env(task, obs_mode, seed)`` builds a gymnasium env (fowm_core.sim.base.XarmEnv) for a task
of the registry (fowm_core.tasks: rewards, success, scene file, initial conditions);
fowm_core.sim.scripted holds the behaviour policy that generates offline datasets.
"""

from __future__ import annotations

import os
import sys

# Headless Linux (CI, containers, the robot PC): mujoco picks its GL backend when first imported and
# its default (glfw) needs a display; EGL renders offscreen (docs/platform.md §9).
if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
    os.environ.setdefault("MUJOCO_GL", "egl")

from typing import Any

from fowm_core.config import Modality
from fowm_core.sim.base import JOINT_NAMES, XarmEnv, state_dim

__all__ = ["JOINT_NAMES", "XarmEnv", "make_env", "state_dim"]


def make_env(task: str, obs_mode: Modality | str = Modality.STATE, seed: int | None = None,
             **kw: Any) -> XarmEnv:
    """Build a task env; ``seed`` seeds its first reset(). Keyword arguments go to XarmEnv
    (action_repeat=2, episode_length=25, image_size=84, workspace)."""
    env = XarmEnv(task, obs_mode, **kw)
    if seed is not None:
        env.seed_next_reset(seed)
        env.action_space.seed(seed)
    return env
