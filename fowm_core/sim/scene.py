"""The simxarm scene shared by the tasks: tool geometry, the workspace box and episode starts.

Numbers are the reference's (fyhMer/fowm benchmarks/simxarm, docs/algorithm.md §7.1), in its
absolute world frame: table centre (1.655, 0.3), table top z = 0.5425, robot base at
(1.09, 0.28, 0.655). The reference samples the mocap (link7) position; here the tool centre point
is sampled, which is the same distribution shifted by the 0.16 m tool offset. What differs per
task (scene file, object, where object and goal start) is the task's own (fowm_core.tasks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fowm_core import tasks
from fowm_core.errors import ConfigError
from fowm_core.tasks.base import TABLE_TOP_Z

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
class InitialConditions:
    """One episode's sampled start: tool position, object position and goal (None if absent)."""

    eef: np.ndarray
    obj: np.ndarray | None
    goal: np.ndarray | None


def _on_table(task: tasks.Task, xy: np.ndarray) -> np.ndarray:
    # Spawn the cube resting on the table, not (as the reference) 1.1 cm inside it for lift.
    return np.array([xy[0], xy[1], TABLE_TOP_Z + task.object_half_m])


def sample_initial(task: str, rng: np.random.Generator, workspace: Workspace) -> InitialConditions:
    """Draw an episode's start (docs/algorithm.md §7.1): the tool ±5 cm on each axis, then the
    task's object and goal from their Spawn ranges, in that order. The tool start is clamped into
    the workspace (the reference's lowest starts would put the fingers in the table)."""
    spec = tasks.get(task)
    eef = workspace.clamp(EEF_START + rng.uniform(-EEF_START_RANGE_M, EEF_START_RANGE_M, 3))
    obj = goal = None
    if spec.object_start is not None:
        start = spec.object_start
        obj = _on_table(spec, np.array(start.centre)
                        + rng.uniform(-start.half_range_m, start.half_range_m, 2))
    if spec.goal_start is not None:
        goal = np.array(spec.goal_start.centre)
        goal[:2] += rng.uniform(-spec.goal_start.half_range_m, spec.goal_start.half_range_m, 2)
    elif spec.goal_from_object is not None:
        goal = spec.goal_from_object(obj)
    return InitialConditions(eef, obj, goal)
