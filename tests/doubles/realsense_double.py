"""A camera-less RealSense for tests: ``rs.software_device`` frames through the SDK's own syncer.

Implements fowm.hardware.realsense.FrameSource. The test pushes numpy images with ``push``; they
become ``rs.software_video_frame``s on a color (and depth) sensor, are matched by ``rs.syncer``,
and come out of ``wait`` as real SDK framesets (recipe: docs/platform.md §8). ``plugged = False``
makes ``start`` fail like a camera that is gone, so reconnect paths can be tested.

Syncer detail: frames must be spaced exactly 1000/fps ms apart in device time or the syncer stops
pairing depth with color; ``push`` stamps them so, in the hardware-clock domain.
"""

from __future__ import annotations

import collections
import threading

import numpy as np
import pyrealsense2 as rs
from fowm.hardware.realsense import CameraConfig, CameraUnavailableError, Intrinsics


def default_intrinsics(config: CameraConfig) -> Intrinsics:
    return Intrinsics(config.width, config.height, fx=0.9 * config.width, fy=0.9 * config.width,
                      ppx=config.width / 2 - 0.5, ppy=config.height / 2 + 0.25,
                      model="plumb_bob", coeffs=(0.01, -0.02, 0.001, 0.0005, 0.003))


class SoftwareCamera:
    """FrameSource over rs.software_device; thread-safe push from the test thread."""

    def __init__(self, config: CameraConfig, intrinsics: Intrinsics | None = None) -> None:
        self.config = config
        self.intrinsics = intrinsics or default_intrinsics(config)
        self.plugged = True
        self.failing_reads = 0       # > 0: the next reads raise, like a USB error mid-stream
        self.starts = 0
        self._lock = threading.Lock()
        self._sensors: list[tuple[rs.software_sensor, rs.stream_profile]] = []
        self._syncer: rs.syncer | None = None
        self._device: rs.software_device | None = None
        self._frame_number = 0
        # The SDK reads pixels when the frame is consumed: keep recent buffers alive until then.
        self._keep: collections.deque[np.ndarray] = collections.deque(maxlen=32)

    def start(self) -> None:
        with self._lock:
            if not self.plugged:
                msg = "software camera unplugged"
                raise CameraUnavailableError(msg)
            self._build()
            self.starts += 1
            self._frame_number = 0

    def wait(self, timeout_ms: int) -> rs.composite_frame | None:
        if self.failing_reads > 0:
            self.failing_reads -= 1
            msg = "simulated USB error"
            raise RuntimeError(msg)
        syncer = self._syncer
        if syncer is None:
            return None
        ok, frames = syncer.try_wait_for_frames(timeout_ms)
        return frames if ok else None

    def stop(self) -> None:
        with self._lock:
            for sensor, _ in self._sensors:
                try:
                    sensor.stop()
                    sensor.close()
                except RuntimeError:
                    pass   # never opened
            self._sensors, self._syncer, self._device = [], None, None

    def push(self, color: np.ndarray, depth: np.ndarray | None = None) -> bool:
        """Feed one frame (and its depth); False if the camera is not streaming."""
        with self._lock:
            if not self._sensors:
                return False
            timestamp_ms = self._frame_number * 1000.0 / self.config.fps
            images = [np.ascontiguousarray(color, dtype=np.uint8)]
            if depth is not None and len(self._sensors) > 1:
                images.append(np.ascontiguousarray(depth, dtype=np.uint16))
            # Depth first, then color: the syncer releases the pair on the second arrival.
            pairs = list(zip(self._sensors, images, strict=False))
            for (sensor, profile), image in reversed(pairs):
                self._keep.append(image)
                frame = rs.software_video_frame()
                frame.pixels = image
                frame.bpp = image.itemsize * (image.shape[2] if image.ndim == 3 else 1)
                frame.stride = image.strides[0]
                frame.timestamp = timestamp_ms
                frame.domain = rs.timestamp_domain.hardware_clock
                frame.frame_number = self._frame_number
                frame.profile = profile.as_video_stream_profile()
                sensor.on_video_frame(frame)
            self._frame_number += 1
            return True

    def _build(self) -> None:
        c, k = self.config, self.intrinsics
        intr = rs.intrinsics()
        intr.width, intr.height, intr.fx, intr.fy, intr.ppx, intr.ppy = (
            k.width, k.height, k.fx, k.fy, k.ppx, k.ppy)
        intr.model = rs.distortion.brown_conrady
        intr.coeffs = list(k.coeffs)
        device = rs.software_device()
        sensors = [(device.add_sensor("Color"), rs.stream.color, rs.format.rgb8, 3)]
        if c.enable_depth:
            sensors.append((device.add_sensor("Depth"), rs.stream.depth, rs.format.z16, 2))
        built = []
        for uid, (sensor, stream, fmt, bpp) in enumerate(sensors, start=1):
            vs = rs.video_stream()
            vs.type, vs.index, vs.uid, vs.fmt, vs.bpp = stream, 0, uid, fmt, bpp
            vs.width, vs.height, vs.fps, vs.intrinsics = c.width, c.height, c.fps, intr
            built.append((sensor, sensor.add_video_stream(vs)))
        if c.enable_depth:
            depth_sensor, depth_profile = built[1]
            depth_sensor.add_read_only_option(rs.option.depth_units, 0.001)
            same_place = rs.extrinsics()
            same_place.rotation, same_place.translation = [1, 0, 0, 0, 1, 0, 0, 0, 1], [0, 0, 0]
            depth_profile.register_extrinsics_to(built[0][1], same_place)
        device.create_matcher(rs.matchers.default)
        syncer = rs.syncer()
        for sensor, profile in built:
            sensor.open(profile)
            sensor.start(syncer)
        self._device, self._sensors, self._syncer = device, built, syncer
