"""fowm_tracker: object and goal poses from ArUco markers in the colour stream (docs/perception.md).

Subscribes the camera's image and CameraInfo (realsense-ros names; the twin publishes the same with
``markers: true``), detects the configured markers (fowm_core.perception.tracker: cv2.aruco, then
solvePnP IPPE_SQUARE with the CameraInfo intrinsics), moves them into link_base with the camera
extrinsics file that `fowm calibrate` writes, and publishes /fowm/object_pose and /fowm/goal_pose
stamped with the image's stamp. A marker not seen, or seen with a reprojection error above
max_reproj_px, publishes nothing for that image: consumers hold on stale state or leave the step
unscored, and never get a guessed pose. /diagnostics (1 Hz): detection rate per target, latency,
reprojection error, refused inputs.

Layouts: ``twin`` uses the markers the twin renders for ``task`` (a marker on each of the cube's
five visible faces, a goal plate); ``single`` takes one object marker and one goal marker from the
parameters (a lab's printed markers; -1 leaves a target untracked).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

from fowm.ros import checkpoint_task, qos
from fowm.ros.diagnostics import OK, WARN, DiagnosticsReporter, Health, fmt, with_guard
from fowm.ros.guard import InputGuard
from fowm.ros.params import declare_from_dataclass
from fowm.ros.spin import run_nodes
from fowm_core import tasks
from fowm_core.contract import topics
from fowm_core.data import convert
from fowm_core.errors import ConfigError, FowmError
from fowm_core.perception import geometry
from fowm_core.perception import markers as mk
from fowm_core.perception.stats import TrackerStats
from fowm_core.perception.tracker import (
    DEFAULT_MAX_REPROJ_PX,
    DEFAULT_REFINEMENT,
    REFINEMENTS,
    MarkerTracker,
    Pose,
)
from fowm_core.runtime.control import param_meta as _p

LAYOUTS = ("twin", "single")
NO_IMAGE_WARN_S = 2.0


@dataclass(frozen=True)
class TrackerParams:
    extrinsics_file: str = field(default="", metadata=_p(
        "camera extrinsics YAML (T_link_base_camera) written by `fowm calibrate`"))
    layout: str = field(default="twin", metadata=_p(
        "twin: the twin's markers for `task`; single: object_id/goal_id below"))
    task: str = field(default="", metadata=_p(
        f"task whose twin markers to track (layout twin): {', '.join(tasks.names())}; empty: "
        "the checkpoint's"))
    checkpoint: str = field(default="", metadata=_p(
        "layout twin: the planner's checkpoint, whose sidecar gives the task (fowm.ros."
        "checkpoint_task)"))
    dictionary: str = field(default=mk.DICTIONARY, metadata=_p("cv2.aruco dictionary name"))
    object_id: int = field(default=-1, metadata=_p(
        "layout single: the object's marker id (-1: no object)", -1, 999))
    object_marker_m: float = field(default=0.04, metadata=_p(
        "layout single: the object marker's black square side (m)", 0.001, 1.0))
    object_offset_m: float = field(default=0.0, metadata=_p(
        "layout single: object centre depth behind the marker face (m; a cube: half its side)",
        -1.0, 1.0))
    goal_id: int = field(default=-1, metadata=_p(
        "layout single: the goal's marker id (-1: no goal)", -1, 999))
    goal_marker_m: float = field(default=0.06, metadata=_p(
        "layout single: the goal marker's black square side (m)", 0.001, 1.0))
    goal_offset_m: float = field(default=0.0, metadata=_p(
        "layout single: goal point depth behind the goal marker's face (m)", -1.0, 1.0))
    max_reproj_px: float = field(default=DEFAULT_MAX_REPROJ_PX, metadata=_p(
        "drop a marker whose RMS reprojection error exceeds this (px)", 0.1, 50.0))
    corner_refinement: str = field(default=DEFAULT_REFINEMENT, metadata=_p(
        f"cv2.aruco corner refinement: {', '.join(REFINEMENTS)}, or several comma-separated "
        "(each adds the markers the ones before missed)"))
    max_future_s: float = field(default=0.5, metadata=_p(
        "refuse images stamped further ahead of the node clock than this", 0.0, 10.0))
    max_age_s: float = field(default=2.0, metadata=_p(
        "refuse images stamped further behind the node clock than this: their pose would be "
        "stale by the time it is used", 0.05, 60.0))


def layout_from(p: TrackerParams) -> mk.Layout:
    if p.layout == "twin":
        if p.task not in tasks.names():
            msg = (f"parameter task={p.task!r} is invalid for layout twin: expected one of "
                   f"{tasks.names()}")
            raise ConfigError(msg)
        return mk.twin_layout(p.task)
    if p.layout == "single":
        obj = (mk.MarkerSet((p.object_id,), p.object_marker_m, p.object_offset_m)
               if p.object_id >= 0 else None)
        goal = (mk.MarkerSet((p.goal_id,), p.goal_marker_m, p.goal_offset_m)
                if p.goal_id >= 0 else None)
        if obj is None and goal is None:
            msg = "layout single with object_id = goal_id = -1 tracks nothing: set at least one"
            raise ConfigError(msg)
        return mk.Layout(obj, goal, p.dictionary)
    msg = f"parameter layout={p.layout!r} is invalid: expected one of {LAYOUTS}"
    raise ConfigError(msg)


class TrackerNode(Node):
    """Node ``fowm_tracker``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("fowm_tracker", **kwargs)
        self.params = p = declare_from_dataclass(self, "", TrackerParams)
        if p.layout == "twin":
            self.params = p = checkpoint_task.resolve(self.get_name(), p)
        if not p.extrinsics_file:
            msg = ("parameter extrinsics_file is empty: run `fowm calibrate --out FILE` (or "
                   "write T_link_base_camera by hand, docs/perception.md) and pass FILE")
            raise ConfigError(msg)
        try:
            layout = layout_from(p)
            self.tracker = MarkerTracker(layout, geometry.load_extrinsics(p.extrinsics_file),
                                         p.max_reproj_px, p.corner_refinement)
        except FowmError as err:
            msg = f"fowm_tracker cannot start: {err}"
            raise ConfigError(msg) from err
        self.targets = tuple(t for t, s in (("object", layout.object), ("goal", layout.goal))
                             if s is not None)
        self.stats = TrackerStats(self.targets)
        self.intrinsics: geometry.Intrinsics | None = None
        self.frames_without_info = 0
        self.conflict_holds = 0
        self._last_image = 0.0
        self._lock = threading.Lock()
        self.inputs = InputGuard(self, p.max_future_s)
        self.pubs = {"object": self.create_publisher(PoseStamped, topics.OBJECT_POSE,
                                                     qos.SENSOR_PUB),
                     "goal": self.create_publisher(PoseStamped, topics.GOAL_POSE,
                                                   qos.SENSOR_PUB)}
        guard = self.inputs.guard
        self.create_subscription(CameraInfo, topics.COLOR_INFO,
                                 guard(topics.COLOR_INFO, self._on_info), qos.SENSOR_SUB)
        self.create_subscription(Image, topics.COLOR_IMAGE,
                                 guard(topics.COLOR_IMAGE, self._on_image), qos.SENSOR_SUB)
        self.diag = DiagnosticsReporter(self, "fowm_tracker: markers",
                                        f"aruco {layout.dictionary}")
        self.diag.publish_every(health=lambda: with_guard(self._health(), self.inputs))

    def _on_info(self, msg: CameraInfo) -> None:
        if self.inputs.future(topics.COLOR_INFO, convert.stamp_ns(msg)):
            return
        intr = geometry.Intrinsics.from_k(msg.k, msg.width, msg.height, msg.d)
        with self._lock:
            self.intrinsics = intr

    def _on_image(self, msg: Image) -> None:
        start = time.monotonic()
        stamp = convert.stamp_ns(msg)
        if self.inputs.future(topics.COLOR_IMAGE, stamp) or self._refused(msg, stamp):
            return
        with self._lock:
            intr = self.intrinsics
        self._last_image = start
        if intr is None:
            self.frames_without_info += 1
            return
        frame = self.tracker.track(convert.image_hwc(msg), intr)
        poses = {"object": frame.object, "goal": frame.goal}
        for target in self.targets:
            pose = poses[target]
            if pose is not None:
                self.pubs[target].publish(_pose_msg(msg.header.stamp, pose))
        done = time.monotonic()
        age_ms = (self.get_clock().now().nanoseconds - stamp) * 1e-6
        self.stats.record({t: poses[t] is not None for t in self.targets},
                          (done - start) * 1e3, age_ms, frame.reproj_px, frame.rejected)

    def _refused(self, msg: Image, stamp: int) -> bool:
        """A stale image, or one while a second node publishes the camera topics (its poses
        could not be trusted to come from the lab's camera): refused and counted."""
        now = self.get_clock().now().nanoseconds
        age_s = (now - stamp) * 1e-9
        if now and age_s > self.params.max_age_s:
            self.inputs.refuse(topics.COLOR_IMAGE, f"image stamped {age_s:.3f} s ago (limit "
                               f"max_age_s={self.params.max_age_s} s): no pose from it")
            return True
        crowded = [t for t in (topics.COLOR_IMAGE, topics.COLOR_INFO)
                   if self.count_publishers(t) > 1]
        if crowded:
            self.conflict_holds += 1
            self.inputs.refuse(topics.COLOR_IMAGE, f"more than one publisher on {crowded}: "
                               "no pose until only the camera publishes")
        return bool(crowded)

    def _health(self) -> Health:
        values = {k: ("" if v is None else fmt(v)) for k, v in self.stats.period().items()}
        values["frames_without_camera_info"] = str(self.frames_without_info)
        values["conflict_holds"] = str(self.conflict_holds)
        silent = time.monotonic() - self._last_image
        if not self._last_image or silent > NO_IMAGE_WARN_S:
            return WARN, f"no images on {topics.COLOR_IMAGE}", values
        if self.intrinsics is None:
            return WARN, f"images but no CameraInfo on {topics.COLOR_INFO}", values
        lost = [t for t in self.targets if values.get(f"{t}_rate") == fmt(0.0)]
        if lost:
            return WARN, f"marker lost: {', '.join(lost)} (no pose published)", values
        return OK, "tracking", values


def _pose_msg(stamp: Any, pose: Pose) -> PoseStamped:
    msg = PoseStamped()
    msg.header.stamp, msg.header.frame_id = stamp, topics.BASE_FRAME
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (
        float(v) for v in pose.position)
    o = msg.pose.orientation
    o.x, o.y, o.z, o.w = (float(v) for v in pose.quat_xyzw)
    return msg


def main(args: list[str] | None = None) -> None:
    """Console script `ros2 run fowm tracker_node`: this node until SIGINT/SIGTERM."""
    run_nodes([TrackerNode], args)


if __name__ == "__main__":
    main()
