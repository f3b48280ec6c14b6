"""What every task module fills in: ``Task`` (the facts of one task), ``TaskState`` (what its
reward, success and scripted controller read) and the helpers they share.

Rewards are pure numpy functions of logged observations (docs/algorithm.md §7.1): the learner
recomputes them from bags, so a reward may only read what the robot topics carry at agent-step
rate: the tool centre point (eef), the gripper's drive_joint angle, the object pose, the goal pose
and the object's initial height, plus the action. The simulation twin calls the same functions,
so sim and bags cannot disagree.

Per env step the reference (fyhMer/fowm benchmarks/simxarm) computes ``r_env`` and sums it over
the ``action_repeat`` env steps of one agent step. Only the state after the agent step is logged,
so ``Task.reward`` returns ``action_repeat × r_env(state after the agent step, action)``: an
approximation of that sum that is exact when the state changes little between the two env steps
(the action term is exact, because the same action is repeated).

Positions are metres in the world frame of the reference scene (absolute, not table-centred).
No mujoco import: tasks run in the learner and the bag tools.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fowm_core.errors import ConfigError, FowmError

# Sizes of the TaskState parts a state vector can hold (its "state mode" layout).
STATE_PART_DIMS = {"eef": 3, "gripper": 1, "obj": 3, "goal": 3}
PROPRIO_KEYS = ("eef", "gripper")
TABLE_TOP_Z = 0.5425           # the shared scene's table top, world frame (objects rest on it)

# The scripted behaviour policies move the tool by GAIN × (target − eef) per agent step.
GAIN = 8.0             # action per metre of error; an agent step moves 0.1 m per unit action
CLEARANCE_M = 0.04             # tool height above a cube's top when moving over it


@dataclass(frozen=True, eq=False)
class TaskState:
    """What the reward sees at one agent step.

    eef: (3,) tool centre point; gripper: drive_joint angle in rad (0 open .. 0.85 closed);
    obj: (3,) object centre or None (reach); goal: (3,) goal position or None;
    obj_init_z: the object's height at the start of the episode, or None (reach, push).
    """

    eef: np.ndarray
    gripper: float
    obj: np.ndarray | None = None
    goal: np.ndarray | None = None
    obj_init_z: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "eef", _vec3(self.eef, "eef"))
        object.__setattr__(self, "gripper", float(self.gripper))
        if self.obj is not None:
            object.__setattr__(self, "obj", _vec3(self.obj, "obj"))
        if self.goal is not None:
            object.__setattr__(self, "goal", _vec3(self.goal, "goal"))
        if self.obj_init_z is not None:
            object.__setattr__(self, "obj_init_z", float(self.obj_init_z))

    def __eq__(self, other: object) -> bool:
        # Field-wise, with arrays compared by value (the generated __eq__ fails on arrays).
        if not isinstance(other, TaskState):
            return NotImplemented
        return all(_same(getattr(self, f), getattr(other, f))
                   for f in ("eef", "gripper", "obj", "goal", "obj_init_z"))

    __hash__ = None  # type: ignore[assignment]   # mutable arrays inside


def _same(a: object, b: object) -> bool:
    if a is None or b is None:
        return a is b
    return bool(np.array_equal(a, b))


def _vec3(value: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.shape != (3,):
        msg = f"TaskState.{name} has shape {arr.shape}; expected (3,) (x, y, z in metres)"
        raise FowmError(msg)
    return arr.copy()


@dataclass(frozen=True)
class Spawn:
    """Where a position starts: ``centre`` (x, y[, z]) in world metres, x and y each drawn
    uniformly within ±``half_range_m`` (an object's z is its resting height on the table)."""

    centre: tuple[float, ...]
    half_range_m: float


@dataclass(frozen=True)
class Task:
    """Every fact of one task; a module per task defines one and the registry lists it.

    action_dim: 3 (tool xyz, the gripper held at ``fixed_gripper``) or 4 (xyz + gripper).
    state_keys / relative_parts: the "state" obs-mode vector (``data.convert.build_state``): the
      TaskState parts in order, then the differences a − b of each pair.
    reward_needs: the TaskState fields that ``step_reward`` and ``is_success`` read.
    step_reward(state, action): the reference's reward of one env step after which the world is in
      ``state`` (action clipped to [-1, 1]); is_success(state): the reference's success.
    scene: the MJCF file under fowm_core/sim/assets; object_half_m: half the cube's size (None: no
      object); object_start, goal_start: where they are drawn at reset (None: absent);
      goal_from_object: the goal derived from the object's settled position instead (lift).
    fixed_gripper: the gripper command of 3-d tasks (the reference pads their actions with +1,
      i.e. closed); None when the action carries it.
    scripted(state): the clean scripted controller of the behaviour policy (docs/algorithm.md §7.1);
      medium_noise: the noise level that makes its datasets "medium", a mix of successes and
      failures (measured rates: docs/sim.md "The scripted behaviour policy").
    """

    name: str
    action_dim: int
    state_keys: tuple[str, ...]
    relative_parts: tuple[tuple[str, str], ...]
    reward_needs: tuple[str, ...]
    step_reward: Callable[[TaskState, np.ndarray], float]
    is_success: Callable[[TaskState], bool]
    scene: str
    scripted: Callable[[TaskState], np.ndarray]
    medium_noise: float
    object_half_m: float | None = None
    object_start: Spawn | None = None
    goal_start: Spawn | None = None
    goal_from_object: Callable[[np.ndarray], np.ndarray] | None = None
    fixed_gripper: float | None = 1.0

    def __post_init__(self) -> None:
        _require(self.action_dim in (3, 4), self, "action_dim", "3 (xyz) or 4 (xyz + gripper)")
        _require((self.fixed_gripper is None) == (self.action_dim == 4), self, "fixed_gripper",
                 "None exactly when the action carries the gripper (action_dim 4)")
        _require(tuple(self.state_keys[:2]) == PROPRIO_KEYS
                 and set(self.state_keys) <= set(STATE_PART_DIMS)
                 and len(set(self.state_keys)) == len(self.state_keys), self, "state_keys",
                 f"{PROPRIO_KEYS} followed by distinct parts of {tuple(STATE_PART_DIMS)}")
        _require(all(a in self.state_keys and b in self.state_keys and a != b
                     and STATE_PART_DIMS[a] == STATE_PART_DIMS[b] == 3
                     for a, b in self.relative_parts), self, "relative_parts",
                 "pairs of distinct 3-d parts of state_keys")
        has_object = self.object_half_m is not None
        _require((self.object_start is not None) == has_object, self, "object_start",
                 "a Spawn exactly when the task has an object (object_half_m set)")
        _require(self.goal_from_object is None or (has_object and self.goal_start is None), self,
                 "goal_from_object", "None unless the task has an object and no goal_start")
        _require(self.medium_noise >= 0, self, "medium_noise", ">= 0")

    @property
    def has_object(self) -> bool:
        return self.object_half_m is not None

    def env_reward(self, state: TaskState, action: np.ndarray) -> float:
        """The reference's reward for one env step, after which the world is in ``state``."""
        a = self._action(action)
        self._need(state)
        return float(self.step_reward(state, a))

    def reward(self, state: TaskState, action: np.ndarray, action_repeat: int = 2) -> float:
        """Reward of one agent step: action_repeat × env_reward(state after the step, action)."""
        if action_repeat < 1:
            msg = f"action_repeat={action_repeat} is invalid: expected >= 1 (FOWM uses 2)"
            raise ConfigError(msg)
        return action_repeat * self.env_reward(state, action)

    def success(self, state: TaskState) -> bool:
        self._need(state)
        return bool(self.is_success(state))

    def _need(self, state: TaskState) -> None:
        missing = [n for n in self.reward_needs if getattr(state, n) is None]
        if missing:
            msg = (f"task {self.name!r} needs TaskState fields {missing}, which are None; log the "
                   f"object and goal poses (and the object's initial height for lift) with the "
                   f"episode")
            raise FowmError(msg)

    def _action(self, action: np.ndarray) -> np.ndarray:
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(-1), -1.0, 1.0)
        if len(a) < self.action_dim:
            msg = (f"task {self.name!r} takes {self.action_dim}-d actions; "
                   f"got {len(a)}-d {a.tolist()}")
            raise FowmError(msg)
        return a


def _require(cond: bool, task: Task, name: str, expected: str) -> None:
    if not cond:
        msg = f"task {task.name!r}: {name}={getattr(task, name)!r} is invalid: expected {expected}"
        raise ConfigError(msg)


def toward(eef: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The scripted controllers' proportional step of the tool toward ``target``."""
    return np.clip(GAIN * (target - eef), -1.0, 1.0)
