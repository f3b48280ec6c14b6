"""Thin adapter over pyrealsense2 (2.59, docs/platform.md §5, §8): frames in, numpy + intrinsics
out.

Where frames come from is one small interface, ``FrameSource`` (start / wait / stop, yielding the
SDK's own framesets): ``PipelineSource`` drives a real camera through ``rs.pipeline``; tests use
``doubles.realsense_double.SoftwareCamera``, a ``rs.software_device`` whose frames go through
the SDK's syncer. Everything after the frameset (alignment, pixel and intrinsics extraction, stamps)
is shared, so tests exercise the same SDK calls as the camera.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pyrealsense2 as rs

from fowm_core.errors import ConfigError


class CameraUnavailableError(RuntimeError):
    """No device, or the device refused to stream; the node retries with backoff."""


@dataclass(frozen=True)
class CameraConfig:
    """Camera node parameters (realsense-ros equivalents: rgb_camera.color_profile, align_depth)."""

    width: int = field(default=640, metadata={"description": "color width", "range": (16, 3840)})
    height: int = field(default=480, metadata={"description": "color height", "range": (16, 2160)})
    fps: int = field(default=30, metadata={"description": "frame rate", "range": (1, 90)})
    enable_depth: bool = field(default=False, metadata={
        "description": "also publish depth aligned to color (16UC1, mm)"})
    serial_no: str = field(default="", metadata={"description": "device serial; empty = any"})
    frame_timeout_s: float = field(default=1.0, metadata={
        "description": "no frame for this long means stalled: reopen the device",
        "range": (0.05, 30.0)})
    reconnect_backoff_s: float = field(default=0.25, metadata={
        "description": "first wait before reopening; doubles per failure", "range": (0.01, 10.0)})
    reconnect_backoff_max_s: float = field(default=5.0, metadata={
        "description": "longest wait between reopen attempts", "range": (0.01, 60.0)})
    diagnostics_period_s: float = field(default=1.0, metadata={
        "description": "periodic /diagnostics publish", "range": (0.05, 10.0)})

    def __post_init__(self) -> None:
        if self.reconnect_backoff_max_s < self.reconnect_backoff_s:
            msg = (f"reconnect_backoff_max_s={self.reconnect_backoff_max_s} < reconnect_backoff_s="
                   f"{self.reconnect_backoff_s}: set the maximum >= the first wait")
            raise ConfigError(msg)


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole model of the color stream (pixels), as librealsense reports it."""

    width: int
    height: int
    fx: float
    fy: float
    ppx: float
    ppy: float
    model: str                      # "plumb_bob" or "equidistant" (ROS distortion_model names)
    coeffs: tuple[float, ...]

    @classmethod
    def from_rs(cls, intr: rs.intrinsics) -> Intrinsics:
        # As realsense-ros: Kannala-Brandt is ROS' "equidistant", Brown-Conrady kinds plumb_bob.
        is_kb = intr.model == rs.distortion.kannala_brandt4
        return cls(int(intr.width), int(intr.height), float(intr.fx), float(intr.fy),
                   float(intr.ppx), float(intr.ppy), "equidistant" if is_kb else "plumb_bob",
                   tuple(float(c) for c in intr.coeffs))


@dataclass(frozen=True)
class CameraFrames:
    """One capture: owned copies (SDK frames go back to the SDK's small pool at once)."""

    color: np.ndarray               # (H, W, 3) uint8, rgb8
    depth: np.ndarray | None        # (H, W) uint16, mm, aligned to color; None if absent
    stamp_ns: int
    frame_number: int
    intrinsics: Intrinsics


class FrameSource(Protocol):
    """Where framesets come from: a real pipeline or a software device + syncer."""

    def start(self) -> None:
        """Begin streaming; raise CameraUnavailableError if there is nothing to stream from."""

    def wait(self, timeout_ms: int) -> rs.composite_frame | None:
        """The next frameset, or None after ``timeout_ms``."""

    def stop(self) -> None:
        """Stop streaming; safe to call when not started."""


class PipelineSource:
    """A real RealSense through rs.pipeline (color rgb8, optional depth z16, same fps)."""

    def __init__(self, config: CameraConfig) -> None:
        self.config = config
        self._pipe: rs.pipeline | None = None

    def start(self) -> None:
        # pipeline.start() blocks for many seconds when no camera is attached (docs/platform.md §8):
        # ask first.
        devices = rs.context().query_devices()
        serials = [d.get_info(rs.camera_info.serial_number) for d in devices]
        if not serials:
            msg = "no RealSense device connected (check the USB3 cable and port)"
            raise CameraUnavailableError(msg)
        if self.config.serial_no and self.config.serial_no not in serials:
            msg = f"RealSense {self.config.serial_no} not found; connected: {serials}"
            raise CameraUnavailableError(msg)
        cfg = rs.config()
        if self.config.serial_no:
            cfg.enable_device(self.config.serial_no)
        c = self.config
        cfg.enable_stream(rs.stream.color, c.width, c.height, rs.format.rgb8, c.fps)
        if c.enable_depth:
            cfg.enable_stream(rs.stream.depth, c.width, c.height, rs.format.z16, c.fps)
        pipe = rs.pipeline()
        try:
            pipe.start(cfg)
        except RuntimeError as err:
            msg = f"RealSense refused {c.width}x{c.height}@{c.fps}: {err}"
            raise CameraUnavailableError(msg) from err
        self._pipe = pipe

    def wait(self, timeout_ms: int) -> rs.composite_frame | None:
        if self._pipe is None:
            return None
        ok, frames = self._pipe.try_wait_for_frames(timeout_ms)
        return frames if ok else None

    def stop(self) -> None:
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            with contextlib.suppress(RuntimeError):   # already stopped by an unplug
                pipe.stop()


class StampMapper:
    """Header stamps as realsense-ros makes them (docs/platform.md §5).

    system/global time are host-clock milliseconds: used as is. The hardware clock counts from
    an arbitrary origin: the first frame after (re)opening is anchored to ROS ``now`` and later
    frames add the device's elapsed time, so inter-frame spacing is the camera's own.
    """

    def __init__(self, now_ns: Callable[[], int]) -> None:
        self._now_ns = now_ns
        self._anchor: tuple[int, float] | None = None

    def reset(self) -> None:
        self._anchor = None

    def stamp_ns(self, timestamp_ms: float, domain: rs.timestamp_domain) -> int:
        if domain in (rs.timestamp_domain.system_time, rs.timestamp_domain.global_time):
            # Via whole microseconds: epoch ns exceed a double's 53-bit mantissa.
            return round(timestamp_ms * 1e3) * 1000
        if self._anchor is None:
            self._anchor = (self._now_ns(), timestamp_ms)
        ros_ns, device_ms = self._anchor
        return ros_ns + round((timestamp_ms - device_ms) * 1e6)


class RealSenseCamera:
    """Color (+ depth aligned to color) as numpy from any FrameSource."""

    def __init__(self, source: FrameSource, config: CameraConfig,
                 now_ns: Callable[[], int]) -> None:
        self.source = source
        self.config = config
        self.stamps = StampMapper(now_ns)
        self._align = rs.align(rs.stream.color) if config.enable_depth else None
        self.is_open = False

    def open(self) -> None:
        self.source.start()
        self.stamps.reset()
        self.is_open = True

    def close(self) -> None:
        self.is_open = False
        self.source.stop()

    def read(self, timeout_s: float) -> CameraFrames | None:
        frames = self.source.wait(max(1, round(timeout_s * 1000)))
        if frames is None:
            return None
        has_depth = self._align is not None and bool(frames.get_depth_frame())
        if has_depth:
            frames = self._align.process(frames)
        color = frames.get_color_frame()
        if not color:
            return None      # a lone depth frame (the syncer releases unmatched frames)
        intr = Intrinsics.from_rs(color.profile.as_video_stream_profile().get_intrinsics())
        depth = None
        if has_depth:
            depth_frame = frames.get_depth_frame()
            depth = np.array(depth_frame.get_data(), dtype=np.uint16, copy=True) if depth_frame \
                else None
        return CameraFrames(
            color=np.array(color.get_data(), dtype=np.uint8, copy=True),
            depth=depth,
            stamp_ns=self.stamps.stamp_ns(color.get_timestamp(),
                                          color.get_frame_timestamp_domain()),
            frame_number=int(color.get_frame_number()),
            intrinsics=intr)
