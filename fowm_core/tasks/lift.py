"""lift: grasp a 7 cm cube and raise it 15 cm (docs/algorithm.md §7.1).

Reference reward per env step: a shaped reach term / 100 plus a pick term worth the object's
height (up to the target height); success when the cube is 15 cm above its initial height.
The action carries the gripper command (4-d).
"""

from __future__ import annotations

import numpy as np

from fowm_core.tasks.base import CLEARANCE_M, Spawn, Task, TaskState, toward

LIFT_HEIGHT_M = 0.15           # success when the object is 15 cm above its initial height
OBJECT_HALF_M = 0.035


def target_z(obj_init_z: float) -> float:
    """Height the object must reach (reference: z_target = init_z + 0.15)."""
    return obj_init_z + LIFT_HEIGHT_M


def goal_from_object(obj: np.ndarray) -> np.ndarray:
    """The reference's lift "goal": the object's initial position raised by 15 cm."""
    return np.array([obj[0], obj[1], target_z(obj[2])])


def step_reward(state: TaskState, action: np.ndarray) -> float:
    # Reference lift.get_reward: a reach term (scaled by 1/100) that pulls the tool onto the
    # cube, and a pick term worth the object's height (capped at the target) once it is lifted.
    gripper_cmd = float(action[3])
    obj, eef = state.obj, state.eef
    z_target = target_z(state.obj_init_z)
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


def is_success(state: TaskState) -> bool:
    return bool(state.obj[2] >= target_z(state.obj_init_z))


def scripted(state: TaskState) -> np.ndarray:
    """Move above the cube with the gripper open, descend, close, lift."""
    obj, eef, grip = state.obj, state.eef, state.gripper
    dx, dy = np.abs(obj[:2] - eef[:2])
    holding = 0.08 < grip < 0.5 and dx < 0.03 and dy < 0.02 and abs(obj[2] - eef[2]) < 0.03
    above = np.array([obj[0], obj[1], obj[2] + OBJECT_HALF_M + CLEARANCE_M])
    if holding:   # raise to 5 cm above the target height (keep rising if it is not known)
        top = eef[2] + 0.1 if state.goal is None else state.goal[2] + 0.05
        return np.array([*toward(eef, np.array([*eef[:2], top])), 1.0])
    if grip > 0.5:                            # closed on nothing: open and back off upwards
        return np.array([*toward(eef, above), -1.0])
    # The open fingers clear the 7 cm cube by 7.5 mm a side along y (the closing direction);
    # along x the 2.5 cm pads may be off by 2 cm and still hold it.
    if eef[2] <= obj[2] + 0.005 and dx < 0.025 and dy < 0.01:
        return np.array([*toward(eef, np.array([obj[0], obj[1], eef[2]])), 1.0])
    if dx < 0.02 and dy < 0.006:
        return np.array([*toward(eef, np.array([obj[0], obj[1], obj[2] - 0.01])), -1.0])
    return np.array([*toward(eef, above), -1.0])


TASK = Task(
    name="lift",
    action_dim=4,
    state_keys=("eef", "gripper", "obj"),
    # The reference simxarm's lift state holds eef − obj (here obj − eef).
    relative_parts=(("obj", "eef"),),
    reward_needs=("obj", "obj_init_z"),
    step_reward=step_reward,
    is_success=is_success,
    scene="lift.xml",
    object_half_m=OBJECT_HALF_M,
    # Reference range: cube ±5 cm around its centre; the goal follows the settled cube.
    object_start=Spawn((1.505, 0.2), 0.05),
    goal_from_object=goal_from_object,
    fixed_gripper=None,
    scripted=scripted,
    # Gives a "medium" dataset, a mix of successes and failures (measured success rates:
    # docs/sim.md "The scripted behaviour policy").
    medium_noise=0.2,
)
