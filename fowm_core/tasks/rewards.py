"""Rewards and success of the xArm tasks as pure functions of logged observations (docs/algorithm.md §7.1).

The learner recomputes rewards from bags, so a reward may only read what the robot topics carry at
agent-step rate: the tool centre point (eef), the gripper's drive_joint angle, the object pose, the
goal pose and the object's initial height, plus the action. The simulation twin calls these same
functions, so sim and bags cannot disagree.

Per env step the reference (fyhMer/fowm benchmarks/simxarm) rewards
  reach: -(‖eef − goal‖ + 0.15‖a_xyz‖²)
  push:  -(‖obj − goal‖ + 0.15‖a_xyz‖²)
  lift:  shaped reach term / 100 + pick term (up to the target height)
and sums over the ``action_repeat`` env steps of one agent step. Only the state after the agent
step is logged, so ``reward`` returns ``action_repeat × r_env(state after the agent step, action)``:
an approximation of that sum that is exact when the state changes little between the two env steps
(the action term is exact, because the same action is repeated).

Positions are metres in the world frame of the reference scene (absolute, not table-centred).
No mujoco import: this module runs in the learner and the bag tools.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fowm_core.errors import ConfigError, FowmError

TASKS = ("reach", "push", "lift")
ACTION_DIM = {"reach": 3, "push": 3, "lift": 4}

SUCCESS_DIST_M = 0.05          # reach and push: success within 5 cm of the goal
LIFT_HEIGHT_M = 0.15           # lift: success when the object is 15 cm above its initial height
ACTION_PENALTY = 0.15          # weight of ‖a_xyz‖² in reach and push


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


def _check_task(task: str) -> None:
    if task not in TASKS:
        msg = f"unknown task {task!r}; expected one of {TASKS}"
        raise ConfigError(msg)


def _need(state: TaskState, task: str, *names: str) -> None:
    missing = [n for n in names if getattr(state, n) is None]
    if missing:
        msg = (f"task {task!r} needs TaskState fields {missing}, which are None; log the object "
               f"and goal poses (and the object's initial height for lift) with the episode")
        raise FowmError(msg)


def _action(task: str, action: np.ndarray) -> np.ndarray:
    a = np.clip(np.asarray(action, dtype=np.float64).reshape(-1), -1.0, 1.0)
    if len(a) < ACTION_DIM[task]:
        msg = f"task {task!r} takes {ACTION_DIM[task]}-d actions; got {len(a)}-d {a.tolist()}"
        raise FowmError(msg)
    return a


def lift_target_z(obj_init_z: float) -> float:
    """Height the lift task's object must reach (reference: z_target = init_z + 0.15)."""
    return obj_init_z + LIFT_HEIGHT_M


def _lift_env_reward(state: TaskState, gripper_cmd: float) -> float:
    # Reference lift.get_reward: a reach term (scaled by 1/100) that pulls the tool onto the
    # cube, and a pick term worth the object's height (capped at the target) once it is lifted.
    obj, eef = state.obj, state.eef
    z_target = lift_target_z(state.obj_init_z)
    reach_dist = float(np.linalg.norm(obj - eef))
    reach_dist_xy = float(np.linalg.norm(obj[:2] - eef[:2]))
    lifted = obj[2] > state.obj_init_z + 0.005
    pick_completed = obj[2] >= z_target - 0.01
    dropped = obj[2] < state.obj_init_z + 0.005 and reach_dist > 0.02
    if reach_dist < 0.05:
        reach = -reach_dist + max(gripper_cmd, 0.0) / 50.0
    elif reach_dist_xy < 0.05:
        reach = -reach_dist
    else:
        reach = -reach_dist - 2.0 * abs(float(obj[2] - eef[2]))
    if pick_completed and not dropped:
        pick = z_target
    elif reach_dist < 0.1 and lifted:
        pick = min(z_target, float(obj[2]))
    else:
        pick = 0.0
    return reach / 100.0 + pick


def env_reward(task: str, state: TaskState, action: np.ndarray) -> float:
    """The reference's reward for one env step, after which the world is in ``state``."""
    _check_task(task)
    a = _action(task, action)
    if task == "reach":
        _need(state, task, "goal")
        dist = np.linalg.norm(state.eef - state.goal)
    elif task == "push":
        _need(state, task, "obj", "goal")
        dist = np.linalg.norm(state.obj - state.goal)
    else:
        _need(state, task, "obj", "obj_init_z")
        return _lift_env_reward(state, float(a[3]))
    return -float(dist + ACTION_PENALTY * float(np.sum(a[:3] ** 2)))


def reward(task: str, state: TaskState, action: np.ndarray, action_repeat: int = 2) -> float:
    """Reward of one agent step: action_repeat × env_reward(state after the step, action)."""
    if action_repeat < 1:
        msg = f"action_repeat={action_repeat} is invalid: expected >= 1 (FOWM uses 2)"
        raise ConfigError(msg)
    return action_repeat * env_reward(task, state, action)


def success(task: str, state: TaskState) -> bool:
    """Reference success: reach/push within 5 cm of the goal; lift 15 cm above the start height."""
    _check_task(task)
    if task == "reach":
        _need(state, task, "goal")
        return bool(np.linalg.norm(state.eef - state.goal) <= SUCCESS_DIST_M)
    if task == "push":
        _need(state, task, "obj", "goal")
        return bool(np.linalg.norm(state.obj - state.goal) <= SUCCESS_DIST_M)
    _need(state, task, "obj", "obj_init_z")
    return bool(state.obj[2] >= lift_target_z(state.obj_init_z))
