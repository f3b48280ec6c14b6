"""XarmEnv: the simxarm tasks as one gymnasium environment on the ``mujoco`` package.

Semantics follow the reference (fyhMer/fowm benchmarks/simxarm; docs/algorithm.md §7.1):
- an env step sets the mocap target to link7's current position plus a_xyz / 20 m (the action is
  clipped to [-1, 1] first, and the target is clamped into the workspace), holds the tool
  orientation at quat [0, 1, 0, 0], sets both finger motors to the gripper command, and runs
  2 × 20 physics steps of 0.002 s (0.08 s);
- one gym step is one agent step = ``action_repeat`` env steps (FOWM: 2, i.e. 0.16 s), and an
  episode is ``episode_length`` agent steps (25), ended by truncation only;
- reward and success come from the task (fowm_core.tasks) on the state after the agent step, so a
  learner reading bags computes the same numbers (see fowm_core.tasks.base for the approximation).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

from fowm_core import tasks
from fowm_core.config import Modality
from fowm_core.contract.topics import GRIPPER_JOINT
from fowm_core.data import convert
from fowm_core.errors import EnvError
from fowm_core.perception import geometry
from fowm_core.sim import markers as plates
from fowm_core.sim import scene
from fowm_core.sim.render import CameraRenderer

ASSETS = os.path.join(os.path.dirname(__file__), "assets")
ARM_JOINTS = tuple(f"joint{i}" for i in range(1, 8))
JOINT_NAMES = (*ARM_JOINTS, GRIPPER_JOINT)
PHYSICS_STEPS_PER_ENV_STEP = 2 * 20      # reference: sim.step() twice, n_substeps = 20
MAX_STEP_M = 1.0 / 20.0                  # mocap displacement per env step at |a| = 1
FINGER_TRAVEL_M = 0.0425                 # finger slide at drive_joint = 0.85 rad (closed)
DRIVE_PER_M = 0.85 / FINGER_TRAVEL_M     # drive_joint angle per metre of finger travel
SETTLE_STEPS = 10 * 20                   # reference _reset_sim: 10 sim steps of 20 substeps
PROPRIO_DIM = 4


@dataclass(frozen=True)
class SimSnapshot:
    """What ``XarmEnv.restore`` needs to return to a moment of an episode."""

    data: mujoco.MjData
    steps: int
    goal: np.ndarray | None
    obj_init_z: float | None


class XarmEnv(gym.Env):
    """One simxarm task. Observations are dicts with "state" (float32) and/or "rgb"
    ((3, H, W) uint8, channel first, from camera0), chosen by ``obs_mode``:
    state: proprio (eef xyz, gripper) + task extras (reach: goal; push: obj, goal; lift: obj);
    rgb: the image only; all: the image and the 4-d proprio (the FOWM setting)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 12}  # noqa: RUF012

    def __init__(self, task: str, obs_mode: Modality | str = Modality.STATE,
                 action_repeat: int = 2, episode_length: int = 25, image_size: int = 84,
                 workspace: scene.Workspace | None = None, markers: bool = False,
                 gripper_marker: str = "") -> None:
        self.spec_task = tasks.get(task)
        self.task = task
        self.obs_mode = _modality(obs_mode)
        if action_repeat < 1 or episode_length < 1 or image_size < 1:
            msg = (f"action_repeat={action_repeat}, episode_length={episode_length}, "
                   f"image_size={image_size}: expected all >= 1 (FOWM: 2, 25, 84)")
            raise EnvError(msg)
        self.action_repeat = action_repeat
        self.episode_length = episode_length
        self.image_size = image_size
        self.workspace = workspace or scene.Workspace()
        self.render_mode = "rgb_array"
        # markers: ArUco plates and a camera for the tracker; gripper_marker (a camera's name):
        # the hand's plate facing that camera, for calibration (fowm_core.sim.markers). Both
        # off, the model is the MJCF file as it is.
        self.markers = markers or bool(gripper_marker)
        self.model = (plates.build_model(task, ASSETS, gripper_marker) if self.markers else
                      mujoco.MjModel.from_xml_path(os.path.join(ASSETS, self.spec_task.scene)))
        self.data = mujoco.MjData(self.model)
        self._ids()
        self._camera = CameraRenderer(self.model, "camera0")
        self._cameras = {"camera0": self._camera}
        self.action_space = gym.spaces.Box(-1.0, 1.0, (self.spec_task.action_dim,), np.float32)
        self.observation_space = self._observation_space()
        self._steps = 0
        self._obj_init_z: float | None = None
        self._goal: np.ndarray | None = None
        self._pending_seed: int | None = None

    def _ids(self) -> None:
        m = self.model
        self._mocap = int(m.body("robot0:mocap").mocapid[0])
        self._link7 = m.body("link7").id
        self._grasp = m.site("grasp").id
        self._arm_qpos = np.array([m.joint(n).qposadr[0] for n in ARM_JOINTS])
        self._finger_qpos = int(m.joint("left_finger_joint").qposadr[0])
        self._home = m.qpos_spring[self._arm_qpos].copy()   # the posture springs' rest angles
        self._obj_site = m.site("object_site").id if self.spec_task.has_object else None
        self._obj_qpos = (int(m.joint("object_joint0").qposadr[0])
                          if self.spec_task.has_object else None)
        # A goal drawn at reset is shown by the scene's target0 site; a derived one is not.
        self._goal_site = m.site("target0").id if self.spec_task.goal_start is not None else None
        self._goal_plate = (m.site(plates.GOAL_SITE).id
                            if self.markers and self._goal_site is not None else None)

    def _observation_space(self) -> gym.spaces.Dict:
        spaces: dict[str, gym.Space] = {}
        if self.obs_mode in (Modality.STATE, Modality.ALL):
            dim = state_dim(self.task, self.obs_mode)
            spaces["state"] = gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32)
        if self.obs_mode in (Modality.RGB, Modality.ALL):
            size = self.image_size
            spaces["rgb"] = gym.spaces.Box(0, 255, (3, size, size), np.uint8)
        return gym.spaces.Dict(spaces)

    # ----------------------------------------------------------------------------- episode
    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], dict]:
        if seed is None and self._pending_seed is not None:
            seed, self._pending_seed = self._pending_seed, None
        super().reset(seed=seed)
        init = scene.sample_initial(self.task, self.np_random, self.workspace)
        self._place(init)
        self._steps = 0
        return self._obs(), self._info()

    def _place(self, init: scene.InitialConditions) -> None:
        # mj_resetData also clears the solver warm start, so a seed fixes the whole trajectory.
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        d.qpos[self._arm_qpos] = self._home
        if init.obj is not None:
            d.qpos[self._obj_qpos:self._obj_qpos + 7] = [*init.obj, 1.0, 0.0, 0.0, 0.0]
        self._goal = None if init.goal is None else init.goal.copy()
        if self._goal_site is not None:
            m.site_pos[self._goal_site] = init.goal
        if self._goal_plate is not None:
            m.site_pos[self._goal_plate] = plates.goal_plate_centre(init.goal)
        d.mocap_pos[self._mocap] = init.eef + scene.TOOL_OFFSET
        d.mocap_quat[self._mocap] = scene.GRIPPER_QUAT
        d.ctrl[:] = self.spec_task.fixed_gripper or 0.0
        mujoco.mj_forward(m, d)
        mujoco.mj_step(m, d, nstep=SETTLE_STEPS)
        self._check_finite()
        self._obj_init_z = None
        if init.obj is not None:
            obj = d.site_xpos[self._obj_site]
            self._obj_init_z = float(obj[2])
            if self.spec_task.goal_from_object is not None:
                self._goal = self.spec_task.goal_from_object(obj.copy())

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict]:
        a = self._clip(action)
        for _ in range(self.action_repeat):
            self.apply_action(a)
            mujoco.mj_step(self.model, self.data, nstep=PHYSICS_STEPS_PER_ENV_STEP)
        self._check_finite()
        self._steps += 1
        state = self.task_state()
        r = self.spec_task.reward(state, a, self.action_repeat)
        truncated = self._steps >= self.episode_length
        return self._obs(), r, False, truncated, self._info(state)

    def _clip(self, action: np.ndarray) -> np.ndarray:
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != self.action_space.shape or not np.isfinite(a).all():
            msg = (f"{self.task} action {a.tolist()} is invalid: expected "
                   f"{self.action_space.shape[0]} finite values (clipped to [-1, 1])")
            raise EnvError(msg)
        return np.clip(a, -1.0, 1.0)

    def apply_action(self, action: np.ndarray) -> np.ndarray:
        """Set the controls of one env step (no physics); returns the new mocap target.

        The target is anchored at link7's current position, as the reference's
        reset_mocap2body_xpos, so tracking lag never accumulates into a wind-up."""
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(-1), -1.0, 1.0)
        eef_target = self.data.xpos[self._link7] - scene.TOOL_OFFSET + a[:3] * MAX_STEP_M
        target = self.workspace.clamp(eef_target) + scene.TOOL_OFFSET
        self.data.mocap_pos[self._mocap] = target
        self.data.mocap_quat[self._mocap] = scene.GRIPPER_QUAT
        gripper = self.spec_task.fixed_gripper if self.spec_task.fixed_gripper is not None else a[3]
        self.data.ctrl[:] = gripper
        return target.copy()

    def place_object(self, position: np.ndarray) -> None:
        """Put the object's centre at ``position`` (upright, at rest) and update the state, e.g. to
        stage a scene by hand. obj_init_z keeps its value from reset()."""
        if self._obj_qpos is None:
            msg = f"task {self.task!r} has no object to place"
            raise EnvError(msg)
        self.data.qpos[self._obj_qpos:self._obj_qpos + 7] = [*position, 1.0, 0.0, 0.0, 0.0]
        dof = self.model.joint("object_joint0").dofadr[0]
        self.data.qvel[dof:dof + 6] = 0.0
        mujoco.mj_forward(self.model, self.data)

    def hold_tool(self, position: np.ndarray, quat_wxyz: np.ndarray, steps: int = SETTLE_STEPS,
                  ) -> None:
        """Drive the tool centre to a pose (position clamped into the workspace) and let it settle:
        the calibration's arm poses, which need orientations the task actions never command."""
        quat = np.asarray(quat_wxyz, dtype=np.float64)
        rot = np.empty(9)
        mujoco.mju_quat2Mat(rot, quat / np.linalg.norm(quat))
        # The mocap drives link7, whose origin lies TOOL_OFFSET_M back along the tool's z axis.
        tool_z = rot.reshape(3, 3)[:, 2]
        self.data.mocap_pos[self._mocap] = (self.workspace.clamp(np.asarray(position))
                                            - tool_z * scene.TOOL_OFFSET_M)
        self.data.mocap_quat[self._mocap] = quat / np.linalg.norm(quat)
        mujoco.mj_step(self.model, self.data, nstep=steps)
        self._check_finite()

    def camera_pose(self, camera: str = "camera0") -> np.ndarray:
        """T_world_optical (4×4) of a camera: the ground truth the calibration is judged by."""
        cam = self._camera_id(camera)
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_camlight(self.model, self.data)
        return geometry.optical_from_mujoco(self.data.cam_xpos[cam], self.data.cam_xmat[cam])

    def camera_intrinsics(self, width: int, height: int,
                          camera: str = "camera0") -> geometry.Intrinsics:
        fovy = float(self.model.cam_fovy[self._camera_id(camera)])
        return geometry.Intrinsics.from_fovy(width, height, fovy)

    def snapshot(self) -> SimSnapshot:
        """The twin's whole dynamic state (a copy of mujoco's MjData, derived quantities too: the
        next action is anchored at link7's position as the last physics step left it, which
        mj_setState + mj_forward would recompute differently; plus the episode's goal and
        counters), for ``restore``: a what-if rollout from here, then back (``fowm diagnose``)."""
        data = mujoco.MjData(self.model)
        mujoco.mj_copyData(data, self.model, self.data)
        goal = None if self._goal is None else self._goal.copy()
        return SimSnapshot(data, self._steps, goal, self._obj_init_z)

    def restore(self, snap: SimSnapshot) -> None:
        """Put the twin back exactly where ``snapshot`` found it: stepping it again with the same
        actions gives the same states, rewards and success."""
        mujoco.mj_copyData(self.data, self.model, snap.data)
        self._steps, self._obj_init_z = snap.steps, snap.obj_init_z
        self._goal = None if snap.goal is None else snap.goal.copy()

    def _check_finite(self) -> None:
        if not np.isfinite(self.data.qpos).all():
            msg = (f"{self.task} simulation diverged (non-finite qpos) after {self._steps} agent "
                   f"steps; reset the env")
            raise EnvError(msg)

    # ------------------------------------------------------------------------ observations
    @property
    def eef(self) -> np.ndarray:
        return self.data.site_xpos[self._grasp].copy()

    @property
    def gripper(self) -> float:
        """drive_joint angle: 0 open .. 0.85 rad closed (what xarm_ros2 reports)."""
        return float(self.data.qpos[self._finger_qpos] * DRIVE_PER_M)

    def eef_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Tool centre position (3,) and orientation quaternion (w, x, y, z), world frame."""
        quat = np.empty(4)
        mujoco.mju_mat2Quat(quat, self.data.site_xmat[self._grasp])
        return self.eef, quat

    def proprio(self) -> np.ndarray:
        """(4,) float32: absolute tool position (world frame) and the gripper angle
        (docs/algorithm.md §7.1)."""
        return np.array([*self.eef, self.gripper], dtype=np.float32)

    def object_pose(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Object centre (3,) and orientation quaternion (w, x, y, z), or None for reach."""
        if self._obj_qpos is None:
            return None
        quat = self.data.qpos[self._obj_qpos + 3:self._obj_qpos + 7].copy()
        return self.data.site_xpos[self._obj_site].copy(), quat

    def task_state(self) -> tasks.TaskState:
        pose = self.object_pose()
        return tasks.TaskState(eef=self.eef, gripper=self.gripper,
                                 obj=None if pose is None else pose[0],
                                 goal=self._goal, obj_init_z=self._obj_init_z)

    def joint_positions(self) -> np.ndarray:
        """(8,) joint1..joint7 (rad) and drive_joint (rad), in JOINT_NAMES order."""
        return np.array([*self.data.qpos[self._arm_qpos], self.gripper])

    def state_vector(self) -> np.ndarray:
        return _state_vector(self.task, self.task_state())

    def _obs(self) -> dict[str, np.ndarray]:
        obs: dict[str, np.ndarray] = {}
        if self.obs_mode == Modality.STATE:
            obs["state"] = self.state_vector()
        elif self.obs_mode == Modality.ALL:
            obs["state"] = self.proprio()
        if self.obs_mode in (Modality.RGB, Modality.ALL):
            image = self.render(self.image_size, self.image_size)
            obs["rgb"] = np.ascontiguousarray(image.transpose(2, 0, 1))
        return obs

    def _info(self, state: tasks.TaskState | None = None) -> dict[str, Any]:
        if state is None:
            state = self.task_state()
        return {"success": self.spec_task.success(state), "task_state": state,
                "joint_pos": self.joint_positions(), "joint_names": JOINT_NAMES,
                "steps": self._steps}

    def render(self, width: int | None = None, height: int | None = None,
               camera: str = "camera0") -> np.ndarray:
        """A camera's image (camera0 unless named), (height, width, 3) uint8; 84×84 unless
        asked otherwise."""
        if camera not in self._cameras:
            self._camera_id(camera)
            self._cameras[camera] = CameraRenderer(self.model, camera)
        return self._cameras[camera].render(self.data, width or self.image_size,
                                            height or self.image_size)

    def _camera_id(self, camera: str) -> int:
        try:
            return self.model.cam(camera).id
        except KeyError as err:
            names = [self.model.cam(i).name for i in range(self.model.ncam)]
            msg = (f"camera {camera!r} is not in the {self.task} twin: expected one of {names} "
                   f"(tracker_cam comes with markers=True)")
            raise EnvError(msg) from err

    def close(self) -> None:
        for renderer in self._cameras.values():
            renderer.close()

    def seed_next_reset(self, seed: int | None) -> None:
        """Make the next reset() without a seed use ``seed`` (make_env's seed argument)."""
        self._pending_seed = seed


def _modality(obs_mode: Modality | str) -> Modality:
    try:
        return Modality(obs_mode)
    except ValueError as err:
        msg = f"obs_mode={obs_mode!r} is invalid: expected one of {[m.value for m in Modality]}"
        raise EnvError(msg) from err


def state_dim(task: str, obs_mode: Modality | str = Modality.STATE) -> int:
    """Length of obs["state"]: 4 in "all" mode, else 4 + the task's object/goal positions and
    the vectors between them (``convert.build_state``)."""
    if _modality(obs_mode) == Modality.ALL:
        return PROPRIO_DIM
    return convert.state_dim(task, "state")


def _state_vector(task: str, state: tasks.TaskState) -> np.ndarray:
    # The bag reader's definition, so the twin and the logs cannot drift apart.
    return convert.build_state(task, "state", state.eef, state.gripper, state.obj, state.goal)
