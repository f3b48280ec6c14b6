"""Rigid transforms, pinhole intrinsics and the camera extrinsics file.

Conventions: a transform ``T_a_b`` is a 4×4 matrix taking points in frame b to frame a. Camera
frames are OpenCV optical frames (x right, y down, z forward), as realsense-ros'
camera_color_optical_frame. A MuJoCo camera looks along its −z with y up, so its optical frame is
its body frame turned by diag(1, −1, −1). Quaternions on ROS messages are (x, y, z, w).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fowm_core.contract import topics
from fowm_core.errors import PerceptionError

MUJOCO_TO_OPTICAL = np.diag([1.0, -1.0, -1.0])


def transform(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    t = np.eye(4)
    t[:3, :3] = np.asarray(rotation, dtype=np.float64).reshape(3, 3)
    t[:3, 3] = np.asarray(translation, dtype=np.float64).reshape(3)
    return t


def invert(t: np.ndarray) -> np.ndarray:
    r = t[:3, :3]
    return transform(r.T, -r.T @ t[:3, 3])


def apply(t: np.ndarray, point: np.ndarray) -> np.ndarray:
    return t[:3, :3] @ np.asarray(point, dtype=np.float64) + t[:3, 3]


def quat_xyzw(rotation: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w), w >= 0, of a rotation matrix."""
    r = np.asarray(rotation, dtype=np.float64)
    w = math.sqrt(max(0.0, 1.0 + r[0, 0] + r[1, 1] + r[2, 2])) / 2
    x = math.copysign(math.sqrt(max(0.0, 1.0 + r[0, 0] - r[1, 1] - r[2, 2])) / 2, r[2, 1] - r[1, 2])
    y = math.copysign(math.sqrt(max(0.0, 1.0 - r[0, 0] + r[1, 1] - r[2, 2])) / 2, r[0, 2] - r[2, 0])
    z = math.copysign(math.sqrt(max(0.0, 1.0 - r[0, 0] - r[1, 1] + r[2, 2])) / 2, r[1, 0] - r[0, 1])
    q = np.array([x, y, z, w])
    return q / np.linalg.norm(q)


def rotation_from_quat(q_xyzw: np.ndarray) -> np.ndarray:
    x, y, z, w = np.asarray(q_xyzw, dtype=np.float64) / np.linalg.norm(q_xyzw)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def rotation_angle_deg(rotation: np.ndarray) -> float:
    """Angle of a rotation matrix (e.g. R_est · R_trueᵀ), in degrees."""
    c = (np.trace(rotation) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


def pose_error(t_est: np.ndarray, t_true: np.ndarray) -> tuple[float, float]:
    """(translation error in mm, rotation error in degrees) between two transforms."""
    mm = 1000.0 * float(np.linalg.norm(t_est[:3, 3] - t_true[:3, 3]))
    return mm, rotation_angle_deg(t_est[:3, :3] @ t_true[:3, :3].T)


def optical_from_mujoco(xpos: np.ndarray, xmat: np.ndarray) -> np.ndarray:
    """T_world_optical of a MuJoCo camera from its data.cam_xpos / cam_xmat."""
    return transform(np.asarray(xmat).reshape(3, 3) @ MUJOCO_TO_OPTICAL, xpos)


DIST_SIZES = (4, 5, 8, 12, 14)     # the distortion models OpenCV knows


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in OpenCV's pixel convention (pixel centres at integers)."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    dist: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        values = (self.fx, self.fy, self.cx, self.cy, *self.dist)
        if not (all(math.isfinite(v) for v in values) and self.fx > 0 and self.fy > 0
                and self.width > 0 and self.height > 0):
            msg = (f"intrinsics fx={self.fx}, fy={self.fy}, cx={self.cx}, cy={self.cy}, "
                   f"{self.width}x{self.height}, dist={self.dist} are invalid: expected finite "
                   f"values, fx, fy > 0 and a non-empty image (a CameraInfo with K set)")
            raise PerceptionError(msg)

    @classmethod
    def from_fovy(cls, width: int, height: int, fovy_deg: float) -> Intrinsics:
        """A MuJoCo camera: square pixels, f from the vertical field of view, principal point
        at the image centre ((W − 1)/2 in OpenCV's convention)."""
        f = 0.5 * height / math.tan(math.radians(fovy_deg) / 2)
        return cls(f, f, (width - 1) / 2, (height - 1) / 2, width, height)

    @classmethod
    def from_k(cls, k: Any, width: int, height: int, d: Any = ()) -> Intrinsics:
        """From a CameraInfo's K (row-major 3×3) and D."""
        k = np.asarray(k, dtype=np.float64).reshape(-1)
        if k.size != 9:
            msg = f"CameraInfo K has {k.size} values; expected 9 (row-major 3x3)"
            raise PerceptionError(msg)
        dist = tuple(float(v) for v in np.asarray(d, dtype=np.float64).reshape(-1)) or (0.0,) * 5
        if len(dist) not in DIST_SIZES:
            # OpenCV raises on any other count, on every image (issue 11 fault suite).
            msg = (f"CameraInfo D has {len(dist)} coefficients; expected one of {DIST_SIZES} "
                   "(plumb_bob: 5)")
            raise PerceptionError(msg)
        return cls(float(k[0]), float(k[4]), float(k[2]), float(k[5]), int(width), int(height),
                   dist)

    def matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def dist_coeffs(self) -> np.ndarray:
        return np.asarray(self.dist, dtype=np.float64)


# -- the extrinsics file ---------------------------------------------------------------------------
def save_extrinsics(path: str | Path, t_base_cam: np.ndarray,
                    info: dict[str, Any] | None = None) -> Path:
    """Write T_base_camera (the camera's optical frame in link_base) as YAML."""
    path = Path(path)
    doc = {"parent_frame": topics.BASE_FRAME, "child_frame": topics.CAMERA_FRAME,
           "translation_m": [float(v) for v in t_base_cam[:3, 3]],
           "rotation_xyzw": [float(v) for v in quat_xyzw(t_base_cam[:3, :3])]}
    if info:
        doc["calibration"] = info
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def load_extrinsics(path: str | Path) -> np.ndarray:
    """T_base_camera from a file written by save_extrinsics (or by hand, same keys)."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        msg = f"cannot read camera extrinsics {path}: {err}; run `fowm calibrate` to write it"
        raise PerceptionError(msg) from err
    if not isinstance(doc, dict):
        msg = f"camera extrinsics {path} holds {type(doc).__name__}; expected a mapping"
        raise PerceptionError(msg)
    for key, want in (("parent_frame", topics.BASE_FRAME), ("child_frame", topics.CAMERA_FRAME)):
        if doc.get(key, want) != want:
            msg = f"camera extrinsics {path}: {key}={doc.get(key)!r}, expected {want!r}"
            raise PerceptionError(msg)
    try:
        t = np.asarray(doc["translation_m"], dtype=np.float64).reshape(3)
        q = np.asarray(doc["rotation_xyzw"], dtype=np.float64).reshape(4)
    except (KeyError, TypeError, ValueError) as err:
        msg = (f"camera extrinsics {path} needs translation_m: [x, y, z] and rotation_xyzw: "
               f"[x, y, z, w]; got keys {sorted(doc)} ({err})")
        raise PerceptionError(msg) from err
    if not (np.isfinite(t).all() and np.isfinite(q).all() and abs(np.linalg.norm(q) - 1) < 1e-3):
        msg = (f"camera extrinsics {path}: translation {t.tolist()} / rotation {q.tolist()} must "
               f"be finite with a unit quaternion")
        raise PerceptionError(msg)
    return transform(rotation_from_quat(q), t)
