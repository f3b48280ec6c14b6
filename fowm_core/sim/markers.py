"""ArUco marker plates on the twin, added only when asked (``XarmEnv(markers=True)``).

The default model is loaded from its MJCF file untouched, so the 84×84 model images and every
trajectory stay as they were. With markers, the same files are loaded into an MjSpec and these are
added before compiling, all as *sites* (sites have no mass and never collide, so the physics is
the same; tests/core/test_sim_markers.py checks it):

- a plate on each of the cube's top and four side faces (ids OBJECT_IDS), covering the face;
- a goal plate (GOAL_ID) that reset() moves onto the drawn goal, just above the red disc;
- a camera for the tracker, ``tracker_cam``, across the table (camera0 stays as it is);
- with ``gripper_marker=CAMERA`` only, a plate on the gripper housing's face towards CAMERA
  (GRIPPER_ID), for calibration.

The layout the tracker needs (sizes, offsets) is fowm_core.perception.markers.twin_layout.
"""

from __future__ import annotations

import os

import mujoco
import numpy as np

from fowm_core import tasks
from fowm_core.perception import geometry
from fowm_core.perception import markers as mk

CELL_PX = 16                      # texture pixels per marker cell (8 cells a plate: 128 px)
HALF_PLATE = mk.PLATE_THICKNESS_M / 2
GOAL_SITE = "goal_marker"
GRIPPER_SITE = "gripper_marker"
# A lab camera for the tracker, across the table facing the arm: camera0 (the reference's view)
# looks past the arm, which hides the goal and the cube for much of an episode
# (docs/results/tracker_twin.json has both). Added with the markers only.
TRACKER_CAMERA = "tracker_cam"
TRACKER_CAMERA_POS = np.array([2.0, 0.3, 1.15])
TRACKER_CAMERA_TARGET = np.array([1.5, 0.3, 0.55])
TRACKER_CAMERA_FOVY = 50.0
# The housing (link7 frame): box at (0, 0, 0.055), half sizes (0.03, 0.05, 0.045). Its +x face
# looks towards the tracker camera when the tool points down, its −y face towards camera0.
_GRIPPER_FACES = {
    TRACKER_CAMERA: (np.array([0.03 + mk.PLATE_THICKNESS_M, 0.0, 0.055]),
                     np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])),  # z → +x
    "camera0": (np.array([0.0, -0.05 - mk.PLATE_THICKNESS_M, 0.055]),
                np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])),   # z → −y
}


def _material(spec: mujoco.MjSpec, marker_id: int) -> str:
    name = f"aruco_{marker_id}"
    img = mk.plate_image(marker_id, CELL_PX)
    tex = spec.add_texture(name=name, type=mujoco.mjtTexture.mjTEXTURE_2D,
                           width=img.shape[1], height=img.shape[0], nchannel=3)
    tex.data = np.repeat(img[:, :, None], 3, axis=2).tobytes()
    mat = spec.add_material(name=f"{name}_mat")
    mat.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = name
    return f"{name}_mat"


def _plate(body: mujoco.MjsBody, name: str, material: str, half_side: float,
           t_body_face: np.ndarray) -> None:
    """A plate whose printed face has the pose ``t_body_face`` (the marker's frame: texture
    rows along its y, z out of the face) in ``body``."""
    rot = t_body_face[:3, :3]
    quat = np.empty(4)
    mujoco.mju_mat2Quat(quat, rot.reshape(-1))
    body.add_site(name=name, type=mujoco.mjtGeom.mjGEOM_BOX,
                  size=[half_side, half_side, HALF_PLATE],
                  pos=list(t_body_face[:3, 3] - rot[:, 2] * HALF_PLATE), quat=list(quat),
                  material=material, rgba=[1, 1, 1, 1])


def _look_at_quat(pos: np.ndarray, target: np.ndarray) -> list[float]:
    """A MuJoCo camera's quaternion (w, x, y, z) looking from ``pos`` at ``target`` (its −z
    forward, y up, x right)."""
    forward = (target - pos) / np.linalg.norm(target - pos)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    rot = np.column_stack([right, np.cross(right, forward), -forward])
    quat = np.empty(4)
    mujoco.mju_mat2Quat(quat, rot.reshape(-1))
    return list(quat)


def build_model(task: str, assets: str, gripper: str = "") -> mujoco.MjModel:
    """The task's model with the object and goal plates and the tracker camera, and the
    gripper's plate facing camera ``gripper`` if given (only for calibration: a 10 cm plate on
    the hand hides part of the table)."""
    spec_task = tasks.get(task)
    spec = mujoco.MjSpec.from_file(os.path.join(assets, spec_task.scene))
    if spec_task.has_object:
        half = spec_task.object_half_m
        body = spec.body("object")
        faces = mk.cube_placements(mk.OBJECT_IDS, half + mk.PLATE_THICKNESS_M)
        for marker_id, t_cube_face in faces.items():
            _plate(body, f"object_marker_{marker_id}", _material(spec, marker_id), half,
                   t_cube_face)
    if spec_task.goal_start is not None:
        # Placed by XarmEnv at every reset; its face sits GOAL_LIFT_M above the goal point.
        _plate(spec.worldbody, GOAL_SITE, _material(spec, mk.GOAL_ID), mk.GOAL_PLATE_M / 2,
               geometry.transform(np.eye(3), spec_task.goal_start.centre))
    spec.worldbody.add_camera(name=TRACKER_CAMERA, pos=list(TRACKER_CAMERA_POS),
                              quat=_look_at_quat(TRACKER_CAMERA_POS, TRACKER_CAMERA_TARGET),
                              fovy=TRACKER_CAMERA_FOVY)
    if gripper:
        face, rot = _GRIPPER_FACES[gripper]
        _plate(spec.body("link7"), GRIPPER_SITE, _material(spec, mk.GRIPPER_ID),
               mk.GRIPPER_PLATE_M / 2, geometry.transform(rot, face))
    return spec.compile()


def goal_plate_centre(goal: np.ndarray) -> np.ndarray:
    """Where the goal plate's site goes for a goal point (its face GOAL_LIFT_M above it)."""
    return np.asarray(goal, dtype=np.float64) + np.array([0.0, 0.0, mk.GOAL_LIFT_M - HALF_PLATE])
