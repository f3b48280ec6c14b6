"""Rigs for the perception nodes in the topic × class matrix (benchmarks/fault_nodes.py): the
tracker and the hand-eye calibration, each fed a frame the twin rendered with its ArUco markers
(640x480, the tracker camera), that frame's CameraInfo and, for the calibration, the arm's pose.

The scene is still, so every correct output is known: the tracker's object/goal positions (the
twin's state) and the calibration's sample (the gripper pose fed, the marker pose detected on the
clean frame). ``bad`` counts outputs, from the fault's start to the end of its recovery, that are
wrong or come from a faulted message: a pose or sample stamped with a stamp the rig never sent
clean (a faulted message carries its own stamp: shifted, or the injector's), a non-finite one, or
one away from the truth (a pose 3 cm off, a sample 1 cm or 1 mm off).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fowm.ros import qos
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image
from std_srvs.srv import Trigger

from benchmarks import fault_inputs as fi
from benchmarks import fault_rigs as fr
from fowm_core.contract import topics
from fowm_core.data import convert
from fowm_core.perception import geometry

W, H = 640, 480
POSE_TOL_M, SAMPLE_TOL_M, GRIPPER_TOL_M = 0.03, 0.01, 0.001


def image_msg(rgb: np.ndarray, ns: int) -> Image:
    h, w = rgb.shape[:2]
    msg = Image(height=h, width=w, encoding="rgb8", step=3 * w,
                data=np.ascontiguousarray(rgb).tobytes())
    msg.header.frame_id = topics.CAMERA_FRAME
    return fi.stamp(msg, ns)


def info_msg(intr: geometry.Intrinsics, ns: int) -> CameraInfo:
    info = CameraInfo(width=intr.width, height=intr.height, distortion_model="plumb_bob",
                      d=[0.0] * 5, k=[float(v) for v in intr.matrix().reshape(-1)])
    info.header.frame_id = topics.CAMERA_FRAME
    return fi.stamp(info, ns)


class CameraRig(fr.Rig):
    """Common to both: the feed (image, CameraInfo, maybe the arm's pose) with the stamps it
    sent clean, per topic, and the extra malformed image (a well-formed frame of another size:
    only a node that compares it with the CameraInfo refuses it)."""

    flood_image = (W, H)
    has_bad = True

    def __init__(self, work: Any) -> None:
        super().__init__(work)
        self.clean: dict[str, set[int]] = {}
        self.make: dict[str, Any] = {}

    def start_feeds(self, make: dict[str, Any]) -> None:
        self.make = make
        self.clean = {t: set() for t in make}
        self.feeds = {t: self.helper.create_publisher(type(m(0)), t, qos.SENSOR_PUB)
                      for t, m in make.items()}

    def feed(self, ns: int) -> None:
        for topic, pub in self.feeds.items():
            msg = self.make[topic](ns)
            if topic in self.mutate:
                msg = self.mutate[topic](msg)
            else:
                self.clean[topic].add(ns)
            pub.publish(msg)

    def adjust_faults(self, topic: str, faults: dict[str, fi.Fault]) -> dict[str, fi.Fault]:
        if topic != topics.COLOR_IMAGE:
            return faults
        rgb = self.rgb[::2, ::2]

        def half(msg: Image) -> Image:
            return image_msg(rgb, convert.stamp_ns(msg))
        old = faults["malformed"]
        return {**faults, "malformed": fi.Fault(
            f"{old.label}, a well-formed {W // 2}x{H // 2} frame (CameraInfo: {W}x{H})",
            edits=[*old.edits, half])}

    def alive(self) -> bool:
        return True


class TrackerRig(CameraRig):
    """fowm_tracker (layout twin, push): poses of the cube and the goal plate."""

    label = "tracker (twin frame with markers)"

    def build(self) -> None:
        from fowm.nodes.tracker_node import TrackerNode

        from fowm_core.sim import make_env
        from fowm_core.sim.markers import TRACKER_CAMERA
        env = make_env("push", "state", markers=True)
        env.reset(seed=0)
        self.rgb = env.render(W, H, TRACKER_CAMERA).copy()
        intr = env.camera_intrinsics(W, H, TRACKER_CAMERA)
        state = env.task_state()
        self.truth = {topics.OBJECT_POSE: np.asarray(state.obj, float),
                      topics.GOAL_POSE: np.asarray(state.goal, float)}
        extrinsics = geometry.save_extrinsics(self.work / "camera.yaml",
                                              env.camera_pose(TRACKER_CAMERA))
        env.close()
        self.node = TrackerNode(parameter_overrides=fr.params(
            task="push", extrinsics_file=str(extrinsics)))
        self.helper = Node("fault_feed")
        self.poses: list[tuple[str, PoseStamped]] = []
        for topic in self.truth:
            self.helper.create_subscription(
                PoseStamped, topic, lambda m, t=topic: self.poses.append((t, m)),
                qos.SENSOR_PUB)
        self.start_feeds({topics.COLOR_IMAGE: lambda ns: image_msg(self.rgb, ns),
                          topics.COLOR_INFO: lambda ns: info_msg(intr, ns)})

    def snap(self) -> dict[str, Any]:
        return {"poses": len(self.poses), "refused": self.node.inputs.total,
                "held": self.node.conflict_holds}

    def progress(self, a: dict, b: dict) -> int:
        return sum(1 for t, _ in self.poses[a["poses"]:b["poses"]] if t == topics.OBJECT_POSE)

    def wrong(self, topic: str, msg: PoseStamped) -> bool:
        position = convert.pose_arrays(msg)[0]
        return (convert.stamp_ns(msg) not in self.clean[topics.COLOR_IMAGE]
                or not np.isfinite(position).all()
                or float(np.linalg.norm(position - self.truth[topic])) > POSE_TOL_M)

    def bad(self, a: dict, b: dict) -> int:
        return sum(self.wrong(t, m) for t, m in self.poses[a["poses"]:])

    def extra(self, topic: str, cls: str, a: dict, b: dict) -> tuple[bool, str]:
        held = b["held"] - a["held"]
        said = (f"{b['poses'] - a['poses']} poses during the fault, {self.bad(a, b)} wrong; "
                f"refused {b['refused'] - a['refused']} inputs, {held} as a conflict")
        return (held > 0 if cls == "flooding" else True), said


class CalibrationRig(CameraRig):
    """fowm_calibration with the arm still at a pose where the gripper's marker is seen; the
    rig calls ~/capture every 0.3 s, during the fault too."""

    label = "calibration (twin frame, arm still)"

    def build(self) -> None:
        from fowm.nodes.calibration_node import CalibrationNode

        from fowm_core.perception import calibration
        from fowm_core.sim import XarmEnv
        from fowm_core.sim.markers import TRACKER_CAMERA
        from fowm_core.sim.scene import GRIPPER_QUAT
        self.node = CalibrationNode(parameter_overrides=fr.params(
            out_file=str(self.work / "camera.yaml")))
        env = XarmEnv("reach", "state", gripper_marker=TRACKER_CAMERA)
        env.reset(seed=0)
        intr = env.camera_intrinsics(W, H, TRACKER_CAMERA)
        for position, quat in calibration.poses(
                np.array(env.workspace.low), np.array(env.workspace.high), 20, GRIPPER_QUAT,
                30.0, 40.0, seed=1):
            env.hold_tool(position, quat)
            self.rgb = env.render(W, H, TRACKER_CAMERA).copy()
            found, _ = self.node.detector.detect(self.rgb, intr)
            if found:
                break
        else:
            msg = "no pose of the twin's arm shows the gripper marker: cannot rig calibration"
            raise RuntimeError(msg)
        self.truth_marker = found[0].t_cam_marker[:3, 3].copy()
        p, q_wxyz = env.eef_pose()
        env.close()
        self.truth_gripper = np.asarray(p, float)
        self.helper = Node("fault_feed")
        self.client = self.helper.create_client(Trigger, "/fowm_calibration/capture")
        self.replies: list[str] = []
        self.pending = 0
        self.ticks = 0

        def pose(ns: int) -> PoseStamped:
            msg = PoseStamped()
            msg.header.frame_id = topics.BASE_FRAME
            msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = map(float, p)
            o = msg.pose.orientation
            o.w, o.x, o.y, o.z = map(float, q_wxyz)
            return fi.stamp(msg, ns)
        self.start_feeds({topics.EE_POSE: pose, topics.COLOR_INFO: lambda ns: info_msg(intr, ns),
                          topics.COLOR_IMAGE: lambda ns: image_msg(self.rgb, ns)})

    def feed(self, ns: int) -> None:
        super().feed(ns)
        self.ticks += 1
        if self.ticks % 3 == 0 and self.pending < 2 and self.client.service_is_ready():
            self.pending += 1
            self.client.call_async(Trigger.Request()).add_done_callback(self._reply)

    def _reply(self, future: Any) -> None:
        self.pending -= 1
        res = future.result()
        self.replies.append("ok" if res.success else res.message)

    def snap(self) -> dict[str, Any]:
        return {"samples": len(self.node.base_gripper), "replies": len(self.replies)}

    def progress(self, a: dict, b: dict) -> int:
        return b["samples"] - a["samples"]

    def wrong(self, i: int) -> bool:
        image_ns, pose_ns = self.node.sample_stamps[i]
        marker = self.node.cam_marker[i][:3, 3]
        gripper = self.node.base_gripper[i][:3, 3]
        return (image_ns not in self.clean[topics.COLOR_IMAGE]
                or pose_ns not in self.clean[topics.EE_POSE]
                or not (np.isfinite(marker).all() and np.isfinite(gripper).all())
                or float(np.linalg.norm(marker - self.truth_marker)) > SAMPLE_TOL_M
                or float(np.linalg.norm(gripper - self.truth_gripper)) > GRIPPER_TOL_M)

    def bad(self, a: dict, b: dict) -> int:
        return sum(self.wrong(i) for i in range(a["samples"], len(self.node.sample_stamps)))

    def extra(self, topic: str, cls: str, a: dict, b: dict) -> tuple[bool, str]:
        refused = [r for r in self.replies[a["replies"]:b["replies"]] if r != "ok"]
        why = sorted({r.split(":")[1].strip()[:60] for r in refused if ":" in r})
        said = (f"{b['samples'] - a['samples']} samples during the fault, {self.bad(a, b)} "
                f"wrong; {len(refused)} captures refused ({'; '.join(why[:3]) or 'none'})")
        held = any("more than one publisher" in r for r in refused)
        return (held if cls == "flooding" else True), said
