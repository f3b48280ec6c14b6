"""What one episode bag holds, as plain data, and a recorder that builds it from the sim twin.

``EpisodeLog`` keeps the raw observation pieces (eef, gripper, joints, object, goal, image) rather
than an encoded state vector, so the bag carries what real drivers publish and any state layout
(``convert.build_state``) can be rebuilt from it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fowm_core.contract.messages import WeightsAnnouncement
from fowm_core.errors import BagError

# The sim's fixed gripper-down orientation (docs/algorithm.md §7.1).
EEF_DOWN_XYZW = (1.0, 0.0, 0.0, 0.0)


@dataclass
class StepRecord:
    """The raw observation pieces at one agent step, all sharing ``stamp_ns``."""

    stamp_ns: int
    eef: np.ndarray                      # (3,) tool centre point, m, base frame
    gripper: float                       # topics.GRIPPER_JOINT position (the gripper opening)
    joints: np.ndarray                   # (7,) arm joints joint1..joint7, rad
    obj: np.ndarray | None = None        # (3,) object position
    goal: np.ndarray | None = None       # (3,) goal position
    rgb: np.ndarray | None = None        # (3,H,W) or (H,W,3) uint8
    eef_quat: Sequence[float] = EEF_DOWN_XYZW

    @classmethod
    def from_task_state(cls, stamp_ns: int, state: Any, joints: Sequence[float],
                        rgb: np.ndarray | None = None) -> StepRecord:
        """From a tasks.TaskState and the joint positions: joint1..joint7, optionally followed
        by the gripper joint (the sim's ``info["joint_pos"]``, (8,)); the gripper comes from
        ``state``."""
        arm = np.asarray(joints, dtype=np.float64).reshape(-1)[:7]
        return cls(stamp_ns, np.asarray(state.eef, float), float(state.gripper), arm,
                   _opt(state.obj), _opt(state.goal), rgb)

    @classmethod
    def from_info(cls, stamp_ns: int, info: dict[str, Any],
                  rgb: np.ndarray | None = None) -> StepRecord:
        """From the sim twin's step/reset ``info`` ("task_state", "joint_pos")."""
        return cls.from_task_state(stamp_ns, info["task_state"], info["joint_pos"], rgb)


def _opt(value: Any) -> np.ndarray | None:
    return None if value is None else np.asarray(value, dtype=np.float64)


@dataclass
class CameraSpec:
    """A pinhole camera for CameraInfo: image size and vertical field of view."""

    width: int
    height: int
    fovy_deg: float


@dataclass
class EpisodeLog:
    """Everything one episode bag holds: T+1 steps, T actions, T rewards, the episode events."""

    task: str
    steps: list[StepRecord]
    actions: np.ndarray                  # (T, A) normalized
    rewards: np.ndarray                  # (T,)
    episode: str | int = 0
    seed: int | None = None
    success: bool = False
    terminal: bool = False
    obj_init_z: float | None = None
    camera: CameraSpec | None = None
    extra: dict[str, Any] = field(default_factory=dict)     # more EpisodeEvent fields (noise)
    # Weights announcements seen during the episode: (log time ns, message), so the learner knows
    # which checkpoint acted. Latched (transient-local) topic.
    weights: list[tuple[int, WeightsAnnouncement]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.actions = np.asarray(self.actions, dtype=np.float32).reshape(len(self.actions), -1)
        self.rewards = np.asarray(self.rewards, dtype=np.float32).reshape(-1)
        steps = len(self.actions)
        if len(self.steps) != steps + 1 or len(self.rewards) != steps:
            msg = (f"episode log has {len(self.steps)} steps, {steps} actions and "
                   f"{len(self.rewards)} rewards; expected T+1 steps, T actions, T rewards")
            raise BagError(msg)
        stamps = [s.stamp_ns for s in self.steps]
        if any(b <= a for a, b in itertools.pairwise(stamps)) or stamps[0] <= 0:
            msg = f"step stamps must be positive and strictly increasing, got {stamps[:4]}…"
            raise BagError(msg)


class EpisodeRecorder:
    """Builds an ``EpisodeLog`` while a sim episode runs, one stamp per agent step."""

    def __init__(self, task: str, episode: str | int = 0, seed: int | None = None,
                 camera: CameraSpec | None = None, start_ns: int = 1_000_000_000,
                 period_ns: int = 160_000_000) -> None:
        self.task, self.episode, self.seed, self.camera = task, episode, seed, camera
        self.start_ns, self.period_ns = start_ns, period_ns
        self.steps: list[StepRecord] = []
        self.actions: list[np.ndarray] = []
        self.rewards: list[float] = []
        self.obj_init_z: float | None = None

    def _stamp(self) -> int:
        return self.start_ns + len(self.steps) * self.period_ns

    def reset(self, info: dict[str, Any], rgb: np.ndarray | None = None) -> None:
        """Start an episode from ``env.reset()``'s info (and obs["rgb"] when logging images)."""
        self.steps, self.actions, self.rewards = [], [], []
        self.obj_init_z = getattr(info["task_state"], "obj_init_z", None)
        self.steps.append(StepRecord.from_info(self._stamp(), info, rgb))

    def step(self, action: np.ndarray, reward: float, info: dict[str, Any],
             rgb: np.ndarray | None = None) -> None:
        """Add one agent step from ``env.step(action)``'s reward and info."""
        self.actions.append(np.asarray(action, dtype=np.float32))
        self.rewards.append(float(reward))
        self.steps.append(StepRecord.from_info(self._stamp(), info, rgb))

    def finish(self, success: bool, terminal: bool = False, **extra: Any) -> EpisodeLog:
        return EpisodeLog(self.task, self.steps, np.stack(self.actions), np.array(self.rewards),
                          self.episode, self.seed, bool(success), bool(terminal), self.obj_init_z,
                          self.camera, dict(extra))
