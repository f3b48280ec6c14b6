"""`fowm calibrate` on the twin: the arm visits safe poses, the camera finds the gripper marker,
hand-eye gives the camera's extrinsics (fowm_core.perception.calibration holds the maths; this
only drives the twin). The answer is judged against the twin's true camera pose.

Poses lie inside the twin's workspace box (fowm_core.sim.scene.Workspace, the box every twin
action is clamped into), shrunk by a margin, around the tasks' tool-down orientation. The twin's
arm frame is its world frame: /xarm/ee_pose and the tracker's link_base poses are in it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fowm_core.errors import PerceptionError
from fowm_core.perception import calibration, geometry
from fowm_core.perception import markers as mk
from fowm_core.perception.tracker import MarkerDetector
from fowm_core.sim.base import XarmEnv
from fowm_core.sim.markers import TRACKER_CAMERA
from fowm_core.sim.scene import GRIPPER_QUAT

WIDTH, HEIGHT = 640, 480


def calibrate_twin(out: Path | None, poses: int = 30, seed: int = 0, method: str = "park",
                   task: str = "reach", max_tilt_deg: float = 30.0,
                   max_turn_deg: float = 40.0, camera: str = TRACKER_CAMERA) -> dict[str, Any]:
    """Run the calibration on the twin; write the extrinsics YAML to ``out`` (if given) and
    return the summary (residual, error against the true camera pose, samples used)."""
    t_base_cam, summary = twin_calibration(poses, seed, method, task, max_tilt_deg, max_turn_deg,
                                           camera)
    if out is not None:
        geometry.save_extrinsics(out, t_base_cam, {**summary, "source": "twin"})
        summary["out"] = str(out)
    return summary


def twin_calibration(poses: int = 30, seed: int = 0, method: str = "park", task: str = "reach",
                     max_tilt_deg: float = 30.0, max_turn_deg: float = 40.0,
                     camera: str = TRACKER_CAMERA) -> tuple[np.ndarray, dict[str, Any]]:
    """(T_base_camera, summary) of one calibration run on the twin."""
    env = XarmEnv(task, "state", gripper_marker=camera)
    try:
        env.reset(seed=seed)
        intr = env.camera_intrinsics(WIDTH, HEIGHT, camera)
        detector = MarkerDetector({mk.GRIPPER_ID: mk.GRIPPER_PLATE_M * mk.MARKER_FRACTION},
                                  mk.DICTIONARY, refinement="APRILTAG")
        base_gripper, cam_marker, missed = [], [], 0
        for position, quat in calibration.poses(
                np.array(env.workspace.low), np.array(env.workspace.high), poses, GRIPPER_QUAT,
                max_tilt_deg, max_turn_deg, seed=seed):
            env.hold_tool(position, quat)
            seen = [d for d in detector.detect(env.render(WIDTH, HEIGHT, camera), intr)[0]
                    if d.marker_id == mk.GRIPPER_ID]
            if not seen:
                missed += 1
                continue
            # The measured tool pose (where the arm got to), not the commanded one.
            p, q_wxyz = env.eef_pose()
            q = np.array([q_wxyz[1], q_wxyz[2], q_wxyz[3], q_wxyz[0]])
            base_gripper.append(geometry.transform(geometry.rotation_from_quat(q), p))
            cam_marker.append(seen[0].t_cam_marker)
        if len(base_gripper) < calibration.MIN_SAMPLES:
            msg = (f"the gripper marker was seen in {len(base_gripper)} of {poses} poses; "
                   f"expected at least {calibration.MIN_SAMPLES}: add poses or lower the tilts")
            raise PerceptionError(msg)
        result = calibration.solve_eye_to_hand(base_gripper, cam_marker, method)
        mm, deg = geometry.pose_error(result.t_base_cam, env.camera_pose(camera))
    finally:
        env.close()
    summary = {**result.summary(), "camera": camera, "poses": poses, "missed": missed, "seed": seed,
               "error_vs_truth_mm": round(mm, 3), "error_vs_truth_deg": round(deg, 4)}
    return result.t_base_cam, summary
