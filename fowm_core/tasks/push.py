"""push: push a 4.8 cm cube onto a goal on the table (docs/algorithm.md §7.1).

Reference reward per env step: -(‖obj − goal‖ + 0.15‖a_xyz‖²); success when the cube is within
5 cm of the goal. The gripper is held closed (3-d actions).
"""

from __future__ import annotations

import numpy as np

from fowm_core.tasks.base import CLEARANCE_M, TABLE_TOP_Z, Spawn, Task, TaskState, toward

SUCCESS_DIST_M = 0.05          # success within 5 cm of the goal
ACTION_PENALTY = 0.15          # weight of ‖a_xyz‖² in the reward
OBJECT_HALF_M = 0.024
PUSH_Z = TABLE_TOP_Z + 0.02    # tool height while pushing: finger tips 1 cm above table


def step_reward(state: TaskState, action: np.ndarray) -> float:
    dist = np.linalg.norm(state.obj - state.goal)
    return -float(dist + ACTION_PENALTY * float(np.sum(action[:3] ** 2)))


def is_success(state: TaskState) -> bool:
    return bool(np.linalg.norm(state.obj - state.goal) <= SUCCESS_DIST_M)


def scripted(state: TaskState) -> np.ndarray:
    """Go (above the table) to a point behind the cube on the goal-to-cube line, descend, push."""
    half = OBJECT_HALF_M
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
            return toward(eef, np.array([*behind, PUSH_Z]))
        # Aim the pusher a few cm past its contact point, on the line through the cube centre.
        push_to = obj[:2] - u * (half + 0.015) + u * min(dist, 0.05)
        return toward(eef, np.array([*push_to, PUSH_Z]))
    if np.linalg.norm(rel) < half + 0.05 and eef[2] < safe_z - 0.01:
        return toward(eef, np.array([*eef[:2], safe_z]))       # clear the cube first
    return toward(eef, np.array([*behind, safe_z]))


TASK = Task(
    name="push",
    action_dim=3,
    state_keys=("eef", "gripper", "obj", "goal"),
    # The reference simxarm's push state holds eef − obj and obj − goal (here their negatives).
    relative_parts=(("obj", "eef"), ("goal", "obj")),
    reward_needs=("obj", "goal"),
    step_reward=step_reward,
    is_success=is_success,
    scene="push.xml",
    object_half_m=OBJECT_HALF_M,
    # Reference ranges: cube ±8 cm, goal ±10 cm around their centres.
    object_start=Spawn((1.405, 0.3), 0.08),
    goal_start=Spawn((1.600, 0.200, 0.545), 0.1),
    scripted=scripted,
    # Gives a "medium" dataset, a mix of successes and failures (measured success rates:
    # docs/sim.md "The scripted behaviour policy").
    medium_noise=0.175,
)
