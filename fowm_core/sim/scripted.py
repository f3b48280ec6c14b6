"""A scripted behaviour policy and offline-dataset collection for the simxarm twin.

The reference datasets are "medium" quality: a mix of successes and failures
(docs/algorithm.md §7.1). Here each task's scripted controller (``Task.scripted``, in its
fowm_core.tasks module) solves it from the logged task state (no simulator access), and Gaussian
action noise plus occasional uniformly random actions degrade it, at the task's ``medium_noise``
by default.
The controller is stateless (a function of the current task state), so it recovers from any state
the noise leads it into, like a partially trained agent would, only sometimes too late.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fowm_core import tasks
from fowm_core.config import Modality
from fowm_core.data.episode import Episode
from fowm_core.data.rollout import Rollout, rollout
from fowm_core.errors import EnvError
from fowm_core.sim.base import XarmEnv, state_dim
from fowm_core.tasks import TaskState
from fowm_core.tasks.base import STATE_PART_DIMS

RANDOM_ACTION_RATE = 0.25    # probability of a uniformly random action, per unit of noise


def task_state_from_vector(task: str, state: np.ndarray) -> TaskState:
    """Rebuild a TaskState from a state-mode observation (the task's state_keys, in order)."""
    s = np.asarray(state, dtype=np.float64).reshape(-1)
    if len(s) != state_dim(task, Modality.STATE):
        msg = (f"{task} state vector has {len(s)} values; expected "
               f"{state_dim(task, Modality.STATE)} (obs_mode 'state'); in 'all' or 'rgb' mode "
               f"pass the env's task_state() instead")
        raise EnvError(msg)
    parts, offset = {}, 0
    for key in tasks.get(task).state_keys:
        size = STATE_PART_DIMS[key]
        parts[key] = s[offset:offset + size]
        offset += size
    return TaskState(parts["eef"], parts["gripper"][0], obj=parts.get("obj"),
                     goal=parts.get("goal"))


class ScriptedPolicy:
    """Noisy scripted controller: with probability RANDOM_ACTION_RATE·noise a uniform random
    action, else the controller's action plus N(0, noise²) per dimension, clipped to [-1, 1]."""

    def __init__(self, task: str, noise: float | None = None,
                 rng: np.random.Generator | None = None) -> None:
        self.spec = tasks.get(task)
        self.task = self.spec.name
        self.noise = self.spec.medium_noise if noise is None else float(noise)
        if self.noise < 0:
            msg = f"noise={self.noise} is invalid: expected >= 0 (0 = the clean controller)"
            raise EnvError(msg)
        self.rng = rng if rng is not None else np.random.default_rng()

    def act(self, obs: TaskState | Mapping[str, np.ndarray] | np.ndarray) -> np.ndarray:
        state = self._state(obs)
        action = self.spec.scripted(state).astype(np.float64)
        dim = self.spec.action_dim
        if self.noise > 0:
            if self.rng.random() < RANDOM_ACTION_RATE * self.noise:
                action = self.rng.uniform(-1.0, 1.0, dim)
            else:
                action = action + self.rng.normal(0.0, self.noise, dim)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def _state(self, obs: TaskState | Mapping[str, np.ndarray] | np.ndarray) -> TaskState:
        if isinstance(obs, TaskState):
            return obs
        if isinstance(obs, Mapping):
            if "state" not in obs:
                msg = "observation has no 'state'; pass the env's task_state() instead"
                raise EnvError(msg)
            obs = obs["state"]
        return task_state_from_vector(self.task, obs)


def collect_episodes(task: str, n: int, noise: float | None = None, seed: int = 0,
                     obs_mode: Modality | str = Modality.ALL, **env_kw: object) -> list[Episode]:
    """Roll out ``n`` scripted episodes; episode i resets with seed ``seed + i``.

    Each Episode's info holds what rewards need in any obs mode: task, seed, noise, goal,
    obj_init_z, and per observation eef (T+1, 3), gripper (T+1,) and obj (T+1, 3) or None.
    ``success`` is the success flag after the last step (the reference's evaluation)."""
    env = XarmEnv(task, obs_mode, **env_kw)
    policy = ScriptedPolicy(task, noise, np.random.default_rng(seed))
    try:
        return [_episode(env, policy, seed + i) for i in range(n)]
    finally:
        env.close()


def scripted_rollout(env: XarmEnv, policy: ScriptedPolicy, seed: int) -> Rollout:
    """One episode of the scripted policy, acting on the task state the env reports."""
    return rollout(env, lambda t, obs, info: policy.act(info["task_state"]), seed)


def _episode(env: XarmEnv, policy: ScriptedPolicy, seed: int) -> Episode:
    run = scripted_rollout(env, policy, seed)
    states = [info["task_state"] for info in run.infos]
    first = states[0]
    record = {
        "task": env.task, "seed": seed, "noise": policy.noise,
        "goal": None if first.goal is None else first.goal.copy(),
        "obj_init_z": first.obj_init_z, "action_repeat": env.action_repeat,
        "eef": np.stack([s.eef for s in states]),
        "gripper": np.array([s.gripper for s in states]),
        "obj": None if first.obj is None else np.stack([s.obj for s in states]),
    }
    return run.episode(record)
