"""Camera extrinsics by hand-eye calibration, eye-to-hand (a fixed camera watches a marker that
the gripper carries): the solver, the arm poses to visit and the residual.

cv2.calibrateHandEye solves the eye-in-hand problem AX = XB. For eye-to-hand OpenCV's
documentation says to pass the base pose in the gripper frame (T_gripper_base, the inverse of each
measured T_base_gripper) where it asks for gripper→base; what comes back as "camera→gripper" is
then T_base_camera, the extrinsics. The marker's mounting on the hand need not be known: it is
the other constant of the problem, and its spread over the samples is the residual.

The arm poses are drawn inside a box the caller takes from its safety limits (the twin's
workspace, or the arm driver's workspace_min_m/max_m), tilted and turned around a base orientation
by bounded angles: hand-eye needs rotations about at least two different axes.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from fowm_core.errors import PerceptionError
from fowm_core.perception import geometry

MIN_SAMPLES = 4
METHODS = {"tsai": cv2.CALIB_HAND_EYE_TSAI, "park": cv2.CALIB_HAND_EYE_PARK,
           "horaud": cv2.CALIB_HAND_EYE_HORAUD, "andreff": cv2.CALIB_HAND_EYE_ANDREFF,
           "daniilidis": cv2.CALIB_HAND_EYE_DANIILIDIS}


@dataclass(frozen=True)
class Result:
    """T_base_camera and how consistently the samples agree with it."""

    t_base_cam: np.ndarray
    samples: int
    residual_mm: float       # RMS spread of the marker's position on the hand over the samples
    residual_deg: float      # RMS spread of its orientation
    method: str

    def summary(self) -> dict[str, float | int | str]:
        return {"samples": self.samples, "residual_mm": round(self.residual_mm, 3),
                "residual_deg": round(self.residual_deg, 4), "method": self.method}


def poses(low: np.ndarray, high: np.ndarray, n: int, base_quat_wxyz: np.ndarray,
          max_tilt_deg: float = 20.0, max_turn_deg: float = 25.0, margin_m: float = 0.05,
          seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` tool poses (position, quaternion w, x, y, z) with positions inside the box shrunk by
    ``margin_m`` and orientations within max_tilt_deg (about x, y) and max_turn_deg (about z)
    of ``base_quat_wxyz`` (the task's tool-down orientation), in the base frame."""
    low, high = np.asarray(low, dtype=np.float64) + margin_m, np.asarray(high) - margin_m
    if n < MIN_SAMPLES or not (low < high).all():
        msg = (f"calibration poses: n={n} in box {low.tolist()}..{high.tolist()} (after a "
               f"{margin_m} m margin): expected n >= {MIN_SAMPLES} and a non-empty box")
        raise PerceptionError(msg)
    rng = np.random.default_rng(seed)
    base = _rot_wxyz(base_quat_wxyz)
    out = []
    for i in range(n):
        position = rng.uniform(low, high)
        # Alternate the dominant axis so rotations about x, y and z all appear early.
        ax, ay, az = np.radians(rng.uniform(-1, 1, 3) * [max_tilt_deg, max_tilt_deg, max_turn_deg])
        ax, ay = (ax, ay) if i % 2 else (ay, ax)
        rot = base @ _axis(0, ax) @ _axis(1, ay) @ _axis(2, az)
        q = geometry.quat_xyzw(rot)
        out.append((position, np.array([q[3], q[0], q[1], q[2]])))
    return out


def solve_eye_to_hand(base_gripper: list[np.ndarray], cam_marker: list[np.ndarray],
                      method: str = "park") -> Result:
    """T_base_camera from paired samples: T_base_gripper (the arm's measured tool pose) and
    T_camera_marker (the gripper marker's PnP pose), 4×4 each."""
    if len(base_gripper) != len(cam_marker) or len(base_gripper) < MIN_SAMPLES:
        msg = (f"{len(base_gripper)} arm poses and {len(cam_marker)} marker poses: expected the "
               f"same number, at least {MIN_SAMPLES} (10-20 gives a steady answer)")
        raise PerceptionError(msg)
    if method not in METHODS:
        msg = f"hand-eye method {method!r} is unknown: expected one of {sorted(METHODS)}"
        raise PerceptionError(msg)
    gripper_base = [geometry.invert(t) for t in base_gripper]
    rot, trans = cv2.calibrateHandEye(
        [t[:3, :3] for t in gripper_base], [t[:3, 3] for t in gripper_base],
        [t[:3, :3] for t in cam_marker], [t[:3, 3] for t in cam_marker], method=METHODS[method])
    t_base_cam = geometry.transform(rot, np.asarray(trans).reshape(3))
    if not np.isfinite(t_base_cam).all():
        msg = ("hand-eye calibration returned a non-finite pose: the arm poses lack rotation "
               "about two different axes; raise max_tilt_deg/max_turn_deg or add poses")
        raise PerceptionError(msg)
    mm, deg = residual(t_base_cam, base_gripper, cam_marker)
    return Result(t_base_cam, len(base_gripper), mm, deg, method)


def residual(t_base_cam: np.ndarray, base_gripper: list[np.ndarray],
             cam_marker: list[np.ndarray]) -> tuple[float, float]:
    """RMS spread (mm, deg) of T_gripper_marker = T_gripper_base · T_base_cam · T_cam_marker
    over the samples: 0 for a perfect calibration, whatever the marker's mounting."""
    on_hand = [geometry.invert(g) @ t_base_cam @ m for g, m in zip(base_gripper, cam_marker,
                                                                   strict=True)]
    positions = np.array([t[:3, 3] for t in on_hand])
    mm = 1000.0 * float(np.sqrt(np.mean(np.sum((positions - positions.mean(0)) ** 2, axis=1))))
    mean_rot = _mean_rotation([t[:3, :3] for t in on_hand])
    deg = float(np.sqrt(np.mean([geometry.rotation_angle_deg(t[:3, :3] @ mean_rot.T) ** 2
                                 for t in on_hand])))
    return mm, deg


def _mean_rotation(rots: list[np.ndarray]) -> np.ndarray:
    u, _, vt = np.linalg.svd(np.sum(rots, axis=0))
    r = u @ vt
    if np.linalg.det(r) < 0:
        u[:, -1] *= -1
        r = u @ vt
    return r


def _axis(axis: int, angle: float) -> np.ndarray:
    i, j = (axis + 1) % 3, (axis + 2) % 3
    c, s = np.cos(angle), np.sin(angle)
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def _rot_wxyz(q: np.ndarray) -> np.ndarray:
    w, x, y, z = np.asarray(q, dtype=np.float64)
    return geometry.rotation_from_quat(np.array([x, y, z, w]))
