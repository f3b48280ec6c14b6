"""reach: move the tool centre point onto a goal above the table (docs/algorithm.md §7.1).

Reference reward per env step: -(‖eef − goal‖ + 0.15‖a_xyz‖²); success within 5 cm of the goal.
The gripper is held closed (3-d actions).
"""

from __future__ import annotations

import numpy as np

from fowm_core.tasks.base import Spawn, Task, TaskState, toward

SUCCESS_DIST_M = 0.05          # success within 5 cm of the goal
ACTION_PENALTY = 0.15          # weight of ‖a_xyz‖² in the reward


def step_reward(state: TaskState, action: np.ndarray) -> float:
    dist = np.linalg.norm(state.eef - state.goal)
    return -float(dist + ACTION_PENALTY * float(np.sum(action[:3] ** 2)))


def is_success(state: TaskState) -> bool:
    return bool(np.linalg.norm(state.eef - state.goal) <= SUCCESS_DIST_M)


def scripted(state: TaskState) -> np.ndarray:
    """Move the tool onto the goal."""
    return toward(state.eef, state.goal)


TASK = Task(
    name="reach",
    action_dim=3,
    state_keys=("eef", "gripper", "goal"),
    relative_parts=(("goal", "eef"),),
    reward_needs=("goal",),
    step_reward=step_reward,
    is_success=is_success,
    scene="reach.xml",
    # Reference range: goal ±12.5 cm around its centre in x and y.
    goal_start=Spawn((1.550, 0.287, 0.580), 0.125),
    scripted=scripted,
    # Gives a "medium" dataset, a mix of successes and failures (measured success rates:
    # docs/sim.md "The scripted behaviour policy").
    medium_noise=0.35,
)
