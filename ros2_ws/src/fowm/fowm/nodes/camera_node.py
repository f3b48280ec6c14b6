"""fowm_camera: the RealSense driver node, publishing realsense-ros' topics (docs/platform.md §5).

``/camera/camera/color/image_raw`` (rgb8) + ``color/camera_info`` in camera_color_optical_frame,
and, with ``enable_depth``, ``aligned_depth_to_color/image_raw`` (16UC1, mm) + its camera_info
(color intrinsics, as realsense-ros publishes aligned depth). No resizing here: the consumer owns
its input size.

Capture runs on its own thread, not in an executor callback: waiting for frames blocks, and
reopening a camera can take a second, which would stall every other node sharing the executor
(the fowm CLI runs all nodes in one process). The thread only publishes; rclpy publishers are
thread-safe. A frame timeout closes the device and reopens it with exponential backoff, reported
on /diagnostics (WARN while stalled, ERROR while the device cannot be opened, OK once frames flow).
Run every process that touches VGA images with FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA
(docs/platform.md §1.7).
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from rclpy.node import Node
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, Image

from fowm.hardware.realsense import (
    CameraConfig,
    CameraFrames,
    CameraUnavailableError,
    FrameSource,
    Intrinsics,
    PipelineSource,
    RealSenseCamera,
)
from fowm.ros import qos
from fowm.ros.diagnostics import ERROR, OK, WARN, DiagnosticsReporter
from fowm.ros.guard import InputGuard, SupervisedThread
from fowm.ros.params import declare_from_dataclass
from fowm.ros.spin import run_nodes
from fowm_core.contract import topics

ALIGNED_DEPTH_IMAGE = "/camera/camera/aligned_depth_to_color/image_raw"
ALIGNED_DEPTH_INFO = "/camera/camera/aligned_depth_to_color/camera_info"
READ_SLICE_S = 0.1      # longest blocking wait, so stop requests are seen quickly


def camera_info(intr: Intrinsics, stamp: Any, frame_id: str) -> CameraInfo:
    """sensor_msgs/CameraInfo for an unrectified pinhole stream (K, D, identity R, P = [K|0])."""
    info = CameraInfo(width=intr.width, height=intr.height, distortion_model=intr.model,
                      d=list(intr.coeffs))
    info.header.stamp, info.header.frame_id = stamp, frame_id
    info.k = [intr.fx, 0.0, intr.ppx, 0.0, intr.fy, intr.ppy, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [intr.fx, 0.0, intr.ppx, 0.0, 0.0, intr.fy, intr.ppy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def image_msg(array: Any, encoding: str, stamp: Any, frame_id: str) -> Image:
    # data=tobytes(): assigning an ndarray copies element by element (docs/platform.md §1.7).
    msg = Image(height=array.shape[0], width=array.shape[1], encoding=encoding,
                is_bigendian=0, step=array.strides[0], data=array.tobytes())
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    return msg


class CameraNode(Node):
    """The camera driver; ``source_factory(config)`` makes the frame source (tests: software)."""

    def __init__(self, source_factory: Callable[[CameraConfig], FrameSource] | None = None,
                 **node_kwargs: Any) -> None:
        super().__init__("fowm_camera", **node_kwargs)
        self.config = declare_from_dataclass(self, "", CameraConfig)
        source = (source_factory or PipelineSource)(self.config)
        self.camera = RealSenseCamera(source, self.config,
                                      now_ns=lambda: self.get_clock().now().nanoseconds)
        self.counts = {"frames": 0, "stalls": 0, "open_attempts": 0, "open_failures": 0}
        self.diag = DiagnosticsReporter(self, "fowm_camera: color",
                                        self.config.serial_no or "realsense")
        self.image_pub = self.create_publisher(Image, topics.COLOR_IMAGE, qos.SENSOR_PUB)
        self.info_pub = self.create_publisher(CameraInfo, topics.COLOR_INFO, qos.SENSOR_PUB)
        self.depth_pub = self.depth_info_pub = None
        if self.config.enable_depth:
            self.depth_pub = self.create_publisher(Image, ALIGNED_DEPTH_IMAGE, qos.SENSOR_PUB)
            self.depth_info_pub = self.create_publisher(CameraInfo, ALIGNED_DEPTH_INFO,
                                                        qos.SENSOR_PUB)
        self.inputs = InputGuard(self)
        self._stop = threading.Event()
        # A capture thread that dies of an unexpected exception (a driver bug, a frame of the
        # wrong shape) is restarted by the diagnostics timer and reported (fowm.ros.guard).
        self._thread = SupervisedThread("fowm_camera_capture", self._capture_loop,
                                        self._thread_died)
        self._thread.start()
        self.create_timer(self.config.diagnostics_period_s,
                          self.inputs.guard("diagnostics timer", self._publish_diagnostics))

    def _thread_died(self, text: str) -> None:
        self.diag.update(ERROR, text.splitlines()[0], capture_restarts=self._thread.restarts + 1,
                         **self.counts)
        self.get_logger().error(text)

    # --- capture thread --------------------------------------------------------------------
    def _capture_loop(self) -> None:
        backoff = self.config.reconnect_backoff_s
        last_frame = time.monotonic()
        while not self._stop.is_set():
            if not self.camera.is_open:
                if not self._open():
                    self._stop.wait(backoff)
                    backoff = min(2.0 * backoff, self.config.reconnect_backoff_max_s)
                    continue
                last_frame = time.monotonic()
            try:
                frames = self.camera.read(min(READ_SLICE_S, self.config.frame_timeout_s))
            except RuntimeError as err:   # librealsense reports USB errors/unplugs this way
                self._reopen(f"frame error: {err}; reopening the camera")
                continue
            if frames is not None:
                last_frame = time.monotonic()
                backoff = self.config.reconnect_backoff_s
                try:
                    self._publish(frames)
                except Exception as err:  # one unusable frame is refused, capture goes on
                    self.inputs.refuse("frames", f"{type(err).__name__}: {err}; "
                                       f"{traceback.format_exc(limit=2).splitlines()[-1]}")
            elif time.monotonic() - last_frame > self.config.frame_timeout_s:
                silent_s = time.monotonic() - last_frame
                self._reopen(f"no frames for {silent_s:.1f} s; reopening the camera")

    def _open(self) -> bool:
        self.counts["open_attempts"] += 1
        try:
            self.camera.open()
        except CameraUnavailableError as err:
            self.counts["open_failures"] += 1
            self.diag.update(ERROR, f"camera unavailable: {err}", **self.counts)
            return False
        return True

    def _reopen(self, why: str) -> None:
        self.counts["stalls"] += 1
        self.diag.update(WARN, why, **self.counts)
        self.get_logger().warning(why, throttle_duration_sec=5.0)
        self.camera.close()

    def _publish(self, frames: CameraFrames) -> None:
        stamp = Time(nanoseconds=frames.stamp_ns).to_msg()
        frame_id = topics.CAMERA_FRAME
        self.image_pub.publish(image_msg(frames.color, "rgb8", stamp, frame_id))
        info = camera_info(frames.intrinsics, stamp, frame_id)
        self.info_pub.publish(info)
        if frames.depth is not None and self.depth_pub is not None:
            # realsense-ros publishes aligned depth in the color optical frame with color K.
            self.depth_pub.publish(image_msg(frames.depth, "16UC1", stamp, frame_id))
            self.depth_info_pub.publish(info)
        self.counts["frames"] += 1
        self.diag.update(OK, "streaming", width=frames.color.shape[1],
                         height=frames.color.shape[0], **self.counts)

    def _publish_diagnostics(self) -> None:
        # A capture thread killed by an unexpected exception must not leave "streaming" behind:
        # it stays ERROR (set by _thread_died) until frames flow again.
        if not self._stop.is_set() and self._thread.check():
            self.get_logger().warning(f"capture thread restarted ({self._thread.restarts})")
        self.diag.update(self.diag.level, self.diag.message, capture_restarts=self._thread.restarts,
                         **self.inputs.values())
        self.diag.publish()

    def destroy_node(self) -> None:
        stop = getattr(self, "_stop", None)    # None when __init__ failed on a parameter
        if stop is not None:
            stop.set()
            self._thread.stop()
            self.camera.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    """Console script `ros2 run fowm camera_node`: this node until SIGINT/SIGTERM."""
    run_nodes([CameraNode], args)


if __name__ == "__main__":
    main()
