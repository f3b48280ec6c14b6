"""fowm_calibration: camera extrinsics on the real arm through the ROS topics (docs/perception.md).

Hand-eye, eye-to-hand, as `fowm calibrate` on the twin, with the same solver
(fowm_core.perception.calibration). The arm driver commands position only, so the operator moves
the arm between poses (pendant, xArm Studio, manual mode): 15-30 poses inside the arm's workspace
box, with the gripper's calibration plate facing the camera and rotations about every axis. At each
pose, ``~/capture`` (std_srvs/Trigger) pairs the newest image's gripper marker pose with the
/xarm/ee_pose nearest to the image's stamp (within ``max_pair_dt_s``); the arm must be still.
``~/solve`` runs cv2.calibrateHandEye on the samples, writes ``out_file`` (the YAML fowm_tracker
reads) and answers with the residual as JSON. Captures the tracker could not use (no marker, no
pose near the stamp, no CameraInfo) are refused with the reason, and so are samples from a faulted
input (issue 11 fault suite): future stamps, a stale image, a pose that is not finite or not in
link_base, a second publisher on any input.
"""

from __future__ import annotations

import json
import math
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image
from std_srvs.srv import Trigger

from fowm.ros import qos
from fowm.ros.diagnostics import OK, WARN, DiagnosticsReporter, Health, with_guard
from fowm.ros.guard import InputGuard
from fowm.ros.params import declare_from_dataclass
from fowm.ros.spin import run_nodes
from fowm_core.contract import topics
from fowm_core.data import convert
from fowm_core.errors import ConfigError, FowmError
from fowm_core.perception import calibration, geometry
from fowm_core.perception import markers as mk
from fowm_core.perception.tracker import DEFAULT_MAX_REPROJ_PX, MarkerDetector
from fowm_core.runtime.control import param_meta as _p

MAX_REACH_M = 2.0     # an xArm's pose lies well within this of link_base


@dataclass(frozen=True)
class CalibrationParams:
    out_file: str = field(default="", metadata=_p("where ~/solve writes the extrinsics YAML"))
    marker_id: int = field(default=mk.GRIPPER_ID, metadata=_p(
        "id of the gripper's calibration marker", 0, 999))
    marker_m: float = field(default=mk.GRIPPER_PLATE_M * mk.MARKER_FRACTION, metadata=_p(
        "its black square's side (m)", 0.001, 1.0))
    dictionary: str = field(default=mk.DICTIONARY, metadata=_p("cv2.aruco dictionary name"))
    method: str = field(default="park", metadata=_p(
        f"cv2.calibrateHandEye method: {', '.join(sorted(calibration.METHODS))}"))
    max_pair_dt_s: float = field(default=0.05, metadata=_p(
        "largest stamp difference between the image and the ee_pose of a sample", 0.0, 1.0))
    max_reproj_px: float = field(default=DEFAULT_MAX_REPROJ_PX, metadata=_p(
        "refuse a capture whose marker reprojects worse than this (px)", 0.1, 50.0))
    max_image_age_s: float = field(default=2.0, metadata=_p(
        "refuse a capture whose newest image is older than this (the camera stopped?)",
        0.05, 60.0))


class CalibrationNode(Node):
    """Node ``fowm_calibration``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("fowm_calibration", **kwargs)
        self.params = p = declare_from_dataclass(self, "", CalibrationParams)
        if not p.out_file:
            msg = "parameter out_file is empty: set where the extrinsics YAML goes"
            raise ConfigError(msg)
        if p.method not in calibration.METHODS:
            msg = (f"parameter method={p.method!r} is invalid: expected one of "
                   f"{sorted(calibration.METHODS)}")
            raise ConfigError(msg)
        try:
            # APRILTAG corners: the most accurate, and a miss only refuses one capture.
            self.detector = MarkerDetector({p.marker_id: p.marker_m}, p.dictionary,
                                           p.max_reproj_px, refinement="APRILTAG")
        except FowmError as err:
            raise ConfigError(str(err)) from err
        self.base_gripper: list[Any] = []
        self.cam_marker: list[Any] = []
        self.sample_stamps: list[tuple[int, int]] = []     # (image, ee_pose) stamps, ns
        self.result: calibration.Result | None = None
        self._image: Image | None = None
        self._info: geometry.Intrinsics | None = None
        self._poses: deque[tuple[int, PoseStamped]] = deque(maxlen=200)
        self._lock = threading.Lock()
        self.inputs = InputGuard(self)
        guard = self.inputs.guard
        self.create_subscription(Image, topics.COLOR_IMAGE,
                                 guard(topics.COLOR_IMAGE, self._on_image), qos.SENSOR_SUB)
        self.create_subscription(CameraInfo, topics.COLOR_INFO,
                                 guard(topics.COLOR_INFO, self._on_info), qos.SENSOR_SUB)
        # Every arm pose (deep, reliable): the one nearest the image's stamp is paired with it.
        self.create_subscription(PoseStamped, topics.EE_POSE,
                                 guard(topics.EE_POSE, self._on_pose), qos.SENSOR_PUB)
        self.create_service(Trigger, "~/capture", self.inputs.service("~/capture",
                                                                      self._on_capture))
        self.create_service(Trigger, "~/solve", self.inputs.service("~/solve", self._on_solve))
        self.diag = DiagnosticsReporter(self, "fowm_calibration: hand-eye", "eye-to-hand")
        self.diag.publish_every(health=lambda: with_guard(self._health(), self.inputs))

    def _on_image(self, msg: Image) -> None:
        if self.inputs.future(topics.COLOR_IMAGE, convert.stamp_ns(msg)):
            return
        convert.image_hwc(msg)              # raises (refused) on a frame it cannot read
        with self._lock:
            self._image = msg

    def _on_info(self, msg: CameraInfo) -> None:
        if self.inputs.future(topics.COLOR_INFO, convert.stamp_ns(msg)):
            return
        intr = geometry.Intrinsics.from_k(msg.k, msg.width, msg.height, msg.d)
        with self._lock:
            self._info = intr

    def _on_pose(self, msg: PoseStamped) -> None:
        if self.inputs.future(topics.EE_POSE, convert.stamp_ns(msg)):
            return
        convert.check_pose(msg, topics.EE_POSE)
        position = convert.pose_arrays(msg)[0]
        if not all(math.isfinite(v) and abs(v) <= MAX_REACH_M for v in position):
            text = (f"{topics.EE_POSE} position {position.tolist()} is not finite or beyond "
                    f"{MAX_REACH_M} m of the base: not the arm's pose")
            raise FowmError(text)
        with self._lock:
            self._poses.append((convert.stamp_ns(msg), msg))

    def capture(self) -> str:
        """Add one sample; returns what was added, raises FowmError with the reason if not."""
        with self._lock:
            image, intr, poses = self._image, self._info, list(self._poses)
        if image is None or intr is None:
            msg = "no image or no CameraInfo yet on the camera topics"
            raise FowmError(msg)
        stamp = convert.stamp_ns(image)
        self._check_inputs(image, intr, stamp)
        if not poses:
            msg = f"no {topics.EE_POSE} received yet"
            raise FowmError(msg)
        pose_stamp, pose = min(poses, key=lambda sp: abs(sp[0] - stamp))
        dt = abs(pose_stamp - stamp) * 1e-9
        if dt > self.params.max_pair_dt_s:
            msg = (f"the nearest {topics.EE_POSE} is {dt:.3f} s from the image (limit "
                   f"{self.params.max_pair_dt_s} s): is the arm driver running?")
            raise FowmError(msg)
        found, rejected = self.detector.detect(convert.image_hwc(image), intr)
        if not found:
            msg = (f"marker {self.params.marker_id} not found in the image ({rejected} rejected: "
                   f"partly hidden or reprojecting badly); turn the plate towards the camera")
            raise FowmError(msg)
        position, quat = convert.pose_arrays(pose)
        self.base_gripper.append(geometry.transform(geometry.rotation_from_quat(quat), position))
        self.cam_marker.append(found[0].t_cam_marker)
        self.sample_stamps.append((stamp, pose_stamp))
        return (f"sample {len(self.base_gripper)}: marker at "
                f"{found[0].t_cam_marker[2, 3]:.3f} m, reprojection {found[0].reproj_px:.2f} px")

    def _check_inputs(self, image: Image, intr: geometry.Intrinsics, stamp: int) -> None:
        """FowmError when the newest image is stale or a second node publishes an input (its
        samples could not be trusted to be the lab's); the detector refuses an image that is
        not the CameraInfo's size."""
        crowded = [t for t in (topics.COLOR_IMAGE, topics.COLOR_INFO, topics.EE_POSE)
                   if self.count_publishers(t) > 1]
        if crowded:
            msg = f"more than one publisher on {crowded}: stop the extra publisher"
            raise FowmError(msg)
        now = self.get_clock().now().nanoseconds
        if now and (now - stamp) * 1e-9 > self.params.max_image_age_s:
            msg = (f"the newest image is {(now - stamp) * 1e-9:.3f} s old (limit "
                   f"max_image_age_s={self.params.max_image_age_s} s): is the camera running?")
            raise FowmError(msg)

    def solve(self) -> calibration.Result:
        result = calibration.solve_eye_to_hand(self.base_gripper, self.cam_marker,
                                               self.params.method)
        geometry.save_extrinsics(self.params.out_file, result.t_base_cam,
                                 {**result.summary(), "source": "fowm_calibration"})
        self.result = result
        return result

    def _on_capture(self, request: Trigger.Request, response: Trigger.Response) -> Any:
        try:
            response.success, response.message = True, self.capture()
        except FowmError as err:
            response.success, response.message = False, f"capture refused: {err}"
        return response

    def _on_solve(self, request: Trigger.Request, response: Trigger.Response) -> Any:
        try:
            result = self.solve()
        except FowmError as err:
            response.success, response.message = False, f"solve refused: {err}"
            return response
        response.success = True
        response.message = json.dumps({**result.summary(), "out_file": self.params.out_file})
        return response

    def _health(self) -> Health:
        values: dict[str, object] = {"samples": len(self.base_gripper)}
        if self.result is not None:
            values.update(self.result.summary())
            return OK, f"solved: residual {self.result.residual_mm:.1f} mm", values
        if len(self.base_gripper) < calibration.MIN_SAMPLES:
            return WARN, (f"{len(self.base_gripper)} samples; call ~/capture at each pose "
                          f"(>= {calibration.MIN_SAMPLES}, 15-30 is better)"), values
        return OK, f"{len(self.base_gripper)} samples; call ~/solve when done", values


def main(args: list[str] | None = None) -> None:
    """Console script `ros2 run fowm calibration_node`: this node until SIGINT/SIGTERM."""
    run_nodes([CalibrationNode], args)


if __name__ == "__main__":
    main()
