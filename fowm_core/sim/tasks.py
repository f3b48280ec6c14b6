"""The simxarm task family (reach, push, lift): scene file, action size and initial conditions.

Numbers are the reference's (fyhMer/fowm benchmarks/simxarm, docs/algorithm.md §7.1), in its absolute
world frame: table centre (1.655, 0.3), table top z = 0.5425, robot base at (1.09, 0.28, 0.655).
The reference samples the mocap (link7) position; here the tool centre point is sampled, which is
the same distribution shifted by the 0.16 m tool offset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fowm_core.errors import ConfigError
from fowm_core.tasks.rewards import ACTION_DIM, TASKS, lift_target_z

TABLE_TOP_Z = 0.5425
TOOL_OFFSET_M = 0.16           # grasp site along link7's z axis (pointing down: quat [0, 1, 0, 0])
TOOL_OFFSET = np.array([0.0, 0.0, TOOL_OFFSET_M])    # link7 origin minus tool centre, world frame
GRIPPER_QUAT = np.array([0.0, 1.0, 0.0, 0.0])   # fixed tool orientation (docs/algorithm.md §7.1)
EEF_START = np.array([1.280, 0.295, 0.735 - TOOL_OFFSET_M])
EEF_START_RANGE_M = 0.05


@dataclass(frozen=True)
class Workspace:
    """Box the tool centre point is kept in: each mocap target is clamped into it.

    x and y are the reference's limits (table centre x − 0.105 + [−0.3, +0.15], y ± 0.3). The
    reference's z limits (0.2 .. 1.2) are not used: 0.2 is inside the table and 1.2 is out of the
    arm's reach over the far half of the table. z_min keeps the finger tips (1 cm below the tool
    centre) 5 mm above the table, which still lets the fingers close around the 7 cm lift cube.
    """

    low: tuple[float, float, float] = (1.25, 0.0, TABLE_TOP_Z + 0.015)
    high: tuple[float, float, float] = (1.70, 0.6, 0.9)

    def __post_init__(self) -> None:
        if not all(lo < hi for lo, hi in zip(self.low, self.high, strict=True)):
            msg = f"workspace low={self.low} must be below high={self.high} on every axis"
            raise ConfigError(msg)

    def clamp(self, eef: np.ndarray) -> np.ndarray:
        return np.clip(eef, self.low, self.high)


@dataclass(frozen=True)
class TaskSpec:
    """Static facts of one task. ``gripper_cmd`` is the fixed gripper command of the 3-d tasks
    (the reference pads their actions with +1, i.e. closed)."""

    name: str
    xml: str
    action_dim: int
    has_object: bool
    object_half_m: float = 0.0
    gripper_cmd: float | None = 1.0


SPECS = {
    "reach": TaskSpec("reach", "reach.xml", ACTION_DIM["reach"], has_object=False),
    "push": TaskSpec("push", "push.xml", ACTION_DIM["push"], has_object=True,
                     object_half_m=0.024),
    "lift": TaskSpec("lift", "lift.xml", ACTION_DIM["lift"], has_object=True,
                     object_half_m=0.035, gripper_cmd=None),
}


@dataclass(frozen=True)
class InitialConditions:
    """One episode's sampled start: tool position, object position and goal (None if absent)."""

    eef: np.ndarray
    obj: np.ndarray | None
    goal: np.ndarray | None


def get_spec(task: str) -> TaskSpec:
    if task not in SPECS:
        msg = f"unknown task {task!r}; expected one of {TASKS}"
        raise ConfigError(msg)
    return SPECS[task]


def _on_table(spec: TaskSpec, xy: np.ndarray) -> np.ndarray:
    # Spawn the cube resting on the table, not (as the reference) 1.1 cm inside it for lift.
    return np.array([xy[0], xy[1], TABLE_TOP_Z + spec.object_half_m])


def sample_initial(task: str, rng: np.random.Generator, workspace: Workspace) -> InitialConditions:
    """Draw an episode's start from the reference ranges (docs/algorithm.md §7.1): tool ±5 cm on each axis;
    reach goal ±12.5 cm; push cube ±8 cm and goal ±10 cm; lift cube ±5 cm. The tool start is
    then clamped into the workspace (the reference's lowest starts would put the fingers in the
    table)."""
    spec = get_spec(task)
    eef = workspace.clamp(EEF_START + rng.uniform(-EEF_START_RANGE_M, EEF_START_RANGE_M, 3))
    if task == "reach":
        goal = np.array([1.550, 0.287, 0.580])
        goal[:2] += rng.uniform(-0.125, 0.125, 2)
        return InitialConditions(eef, None, goal)
    if task == "push":
        obj = _on_table(spec, np.array([1.405, 0.3]) + rng.uniform(-0.08, 0.08, 2))
        goal = np.array([1.600, 0.200, 0.545])
        goal[:2] += rng.uniform(-0.1, 0.1, 2)
        return InitialConditions(eef, obj, goal)
    obj = _on_table(spec, np.array([1.505, 0.2]) + rng.uniform(-0.05, 0.05, 2))
    # The lift "goal" is the reference's: the initial object position raised by 15 cm.
    goal = np.array([obj[0], obj[1], lift_target_z(obj[2])])
    return InitialConditions(eef, obj, goal)
