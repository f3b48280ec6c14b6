"""A scripted behaviour policy and offline-dataset collection for the simxarm twin.

The reference datasets are "medium" quality: a mix of successes and failures (docs/algorithm.md §7.1).
Here a simple controller solves each task from the logged task state (no simulator access), and
Gaussian action noise plus occasional uniformly random actions degrade it:
- reach: move the tool onto the goal;
- push: go (above the table) to a point behind the cube on the goal-to-cube line, descend, push;
- lift: move above the cube with the gripper open, descend, close, lift.
The controller is stateless (a function of the current task state), so it recovers from any state
the noise leads it into, like a partially trained agent would, only sometimes too late.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fowm_core.config import Modality
from fowm_core.data.episode import Episode
from fowm_core.data.rollout import Rollout, rollout
from fowm_core.errors import EnvError
from fowm_core.sim import tasks
from fowm_core.sim.base import PROPRIO_DIM, XarmEnv, state_dim
from fowm_core.tasks.rewards import ACTION_DIM, TaskState

GAIN = 8.0              # action per metre of error; an agent step moves 0.1 m per unit action
RANDOM_ACTION_RATE = 0.25    # probability of a uniformly random action, per unit of noise
# Noise that gives "medium" datasets: measured success over 100 episodes (seeds 5000..5099) at
# these levels: reach 40 %, push 43 %, lift 40 %; the clean controller (noise 0) solves 95-100 %.
MEDIUM_NOISE = {"reach": 0.35, "push": 0.175, "lift": 0.2}
PUSH_Z = tasks.TABLE_TOP_Z + 0.02      # tool height while pushing: finger tips 1 cm above table
CLEARANCE_M = 0.04                     # tool height above a cube's top when moving over it


def _toward(eef: np.ndarray, target: np.ndarray) -> np.ndarray:
    return np.clip(GAIN * (target - eef), -1.0, 1.0)


def reach_action(state: TaskState) -> np.ndarray:
    return _toward(state.eef, state.goal)


def push_action(state: TaskState) -> np.ndarray:
    half = tasks.SPECS["push"].object_half_m
    obj, eef = state.obj, state.eef
    d = state.goal[:2] - obj[:2]
    dist = float(np.linalg.norm(d))
    u = d / dist if dist > 1e-6 else np.array([1.0, 0.0])
    rel = eef[:2] - obj[:2]
    along = float(rel @ u)
    lateral = float(np.linalg.norm(rel - along * u))
    behind = obj[:2] - u * (half + 0.03)
    safe_z = obj[2] + half + CLEARANCE_M
    if along < -(half + 0.01) and lateral < 0.02:
        if eef[2] > PUSH_Z + 0.01:
            return _toward(eef, np.array([*behind, PUSH_Z]))
        # Aim the pusher a few cm past its contact point, on the line through the cube centre.
        push_to = obj[:2] - u * (half + 0.015) + u * min(dist, 0.05)
        return _toward(eef, np.array([*push_to, PUSH_Z]))
    if np.linalg.norm(rel) < half + 0.05 and eef[2] < safe_z - 0.01:
        return _toward(eef, np.array([*eef[:2], safe_z]))       # clear the cube first
    return _toward(eef, np.array([*behind, safe_z]))


def lift_action(state: TaskState) -> np.ndarray:
    obj, eef, grip = state.obj, state.eef, state.gripper
    dx, dy = np.abs(obj[:2] - eef[:2])
    holding = 0.08 < grip < 0.5 and dx < 0.03 and dy < 0.02 and abs(obj[2] - eef[2]) < 0.03
    above = np.array([obj[0], obj[1], obj[2] + tasks.SPECS["lift"].object_half_m + CLEARANCE_M])
    if holding:   # raise to 5 cm above the target height (keep rising if it is not known)
        top = eef[2] + 0.1 if state.goal is None else state.goal[2] + 0.05
        return np.array([*_toward(eef, np.array([*eef[:2], top])), 1.0])
    if grip > 0.5:                            # closed on nothing: open and back off upwards
        return np.array([*_toward(eef, above), -1.0])
    # The open fingers clear the 7 cm cube by 7.5 mm a side along y (the closing direction);
    # along x the 2.5 cm pads may be off by 2 cm and still hold it.
    if eef[2] <= obj[2] + 0.005 and dx < 0.025 and dy < 0.01:
        return np.array([*_toward(eef, np.array([obj[0], obj[1], eef[2]])), 1.0])
    if dx < 0.02 and dy < 0.006:
        return np.array([*_toward(eef, np.array([obj[0], obj[1], obj[2] - 0.01])), -1.0])
    return np.array([*_toward(eef, above), -1.0])


_CONTROLLERS = {"reach": reach_action, "push": push_action, "lift": lift_action}


def task_state_from_vector(task: str, state: np.ndarray) -> TaskState:
    """Rebuild a TaskState from a state-mode observation (proprio + the task's positions)."""
    s = np.asarray(state, dtype=np.float64).reshape(-1)
    if len(s) != state_dim(task, Modality.STATE):
        msg = (f"{task} state vector has {len(s)} values; expected "
               f"{state_dim(task, Modality.STATE)} (obs_mode 'state'); in 'all' or 'rgb' mode "
               f"pass the env's task_state() instead")
        raise EnvError(msg)
    eef, grip, rest = s[:3], s[3], s[PROPRIO_DIM:]
    if task == "reach":
        return TaskState(eef, grip, goal=rest[:3])
    if task == "push":
        return TaskState(eef, grip, obj=rest[:3], goal=rest[3:6])
    return TaskState(eef, grip, obj=rest[:3])


class ScriptedPolicy:
    """Noisy scripted controller: with probability RANDOM_ACTION_RATE·noise a uniform random
    action, else the controller's action plus N(0, noise²) per dimension, clipped to [-1, 1]."""

    def __init__(self, task: str, noise: float | None = None,
                 rng: np.random.Generator | None = None) -> None:
        self.task = tasks.get_spec(task).name
        self.noise = MEDIUM_NOISE[task] if noise is None else float(noise)
        if self.noise < 0:
            msg = f"noise={self.noise} is invalid: expected >= 0 (0 = the clean controller)"
            raise EnvError(msg)
        self.rng = rng if rng is not None else np.random.default_rng()

    def act(self, obs: TaskState | Mapping[str, np.ndarray] | np.ndarray) -> np.ndarray:
        state = self._state(obs)
        action = _CONTROLLERS[self.task](state).astype(np.float64)
        dim = ACTION_DIM[self.task]
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
