"""fowm_camera on real rclpy, fed by a real rs.software_device through the SDK's syncer."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyrealsense2 as rs
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from doubles.realsense_double import SoftwareCamera
from fowm.hardware.realsense import (
    CameraConfig,
    CameraUnavailableError,
    PipelineSource,
    StampMapper,
)
from fowm.nodes.camera_node import ALIGNED_DEPTH_IMAGE, CameraNode
from fowm.ros import qos
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from fowm_core.contract import topics
from fowm_core.errors import ConfigError

W, H, FPS = 64, 48, 30
COLLECT = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)


@dataclass
class Rig:
    node: CameraNode
    cam: SoftwareCamera
    client: Node
    images: list[Image] = field(default_factory=list)
    infos: list[CameraInfo] = field(default_factory=list)
    depths: list[Image] = field(default_factory=list)
    diags: list[DiagnosticStatus] = field(default_factory=list)

    def __post_init__(self) -> None:
        c = self.client
        self.image_sub = c.create_subscription(Image, topics.COLOR_IMAGE, self.images.append,
                                               COLLECT)
        c.create_subscription(CameraInfo, topics.COLOR_INFO, self.infos.append, COLLECT)
        c.create_subscription(Image, ALIGNED_DEPTH_IMAGE, self.depths.append, COLLECT)
        c.create_subscription(DiagnosticArray, topics.DIAGNOSTICS,
                              lambda m: self.diags.extend(m.status), qos.DIAGNOSTICS)


@pytest.fixture
def make_rig(executor, spin_until):
    def make(**overrides: object) -> Rig:
        cams: list[SoftwareCamera] = []

        def factory(config: CameraConfig) -> SoftwareCamera:
            cams.append(SoftwareCamera(config))
            return cams[-1]

        params = {"width": W, "height": H, "fps": FPS, **overrides}
        node = CameraNode(source_factory=factory, parameter_overrides=[
            Parameter(k, value=v) for k, v in params.items()])
        rig = Rig(node=node, cam=cams[0], client=Node("test_viewer"))
        executor.add_node(node)
        executor.add_node(rig.client)
        assert spin_until(lambda: rig.node.image_pub.get_subscription_count() > 0
                          and rig.cam.starts > 0)
        return rig

    return make


def random_image(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)


def test_publishes_exact_pixels_intrinsics_and_device_spaced_stamps(make_rig, spin_until) -> None:
    rig = make_rig()
    rng = np.random.default_rng(0)
    before_ns = rig.node.get_clock().now().nanoseconds
    sent = []
    for k in range(4):
        image = random_image(rng)
        sent.append(image)
        assert rig.cam.push(image)
        assert spin_until(lambda k=k: len(rig.images) > k and len(rig.infos) > k)
    after_ns = rig.node.get_clock().now().nanoseconds
    for image, msg in zip(sent, rig.images, strict=True):
        assert (msg.height, msg.width, msg.encoding, msg.step) == (H, W, "rgb8", W * 3)
        assert msg.header.frame_id == topics.CAMERA_FRAME
        received = np.frombuffer(msg.data, np.uint8).reshape(H, W, 3)
        np.testing.assert_array_equal(received, image)
    stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in rig.images]
    # Hardware clock: first frame anchored to ROS now, then the device's own 1/fps spacing.
    assert before_ns <= stamps[0] <= after_ns
    for k, stamp in enumerate(stamps):
        assert abs(stamp - stamps[0] - round(k * 1e9 / FPS)) <= 1
    k_int = rig.cam.intrinsics
    info = rig.infos[0]
    assert info.header.stamp == rig.images[0].header.stamp
    assert info.header.frame_id == topics.CAMERA_FRAME
    assert (info.width, info.height, info.distortion_model) == (W, H, "plumb_bob")
    np.testing.assert_allclose(info.k, [k_int.fx, 0, k_int.ppx, 0, k_int.fy, k_int.ppy, 0, 0, 1],
                               rtol=1e-6)
    np.testing.assert_allclose(info.d, k_int.coeffs, rtol=1e-6)
    np.testing.assert_allclose(np.reshape(info.p, (3, 4))[:, :3], np.reshape(info.k, (3, 3)))


def test_aligned_depth_is_published_as_16uc1(make_rig, spin_until) -> None:
    rig = make_rig(enable_depth=True)
    rng = np.random.default_rng(1)
    depth = np.full((H, W), 1234, np.uint16)
    assert spin_until(lambda: len(rig.depths) > 0,
                      every=lambda: rig.cam.push(random_image(rng), depth))
    msg = rig.depths[0]
    assert (msg.height, msg.width, msg.encoding, msg.step) == (H, W, "16UC1", 2 * W)
    assert msg.header.frame_id == topics.CAMERA_FRAME     # aligned to color, like realsense-ros
    aligned = np.frombuffer(msg.data, np.uint16).reshape(H, W)
    # Identity extrinsics and equal intrinsics: the interior maps onto itself (align's
    # rasterisation can leave a few holes, 0 = no depth, as on a real camera).
    interior = aligned[4:-4, 4:-4]
    assert np.all(interior[interior > 0] == 1234)
    assert np.mean(interior > 0) > 0.9
    assert any(m.header.stamp == msg.header.stamp for m in rig.images)


def test_stalled_source_reconnects_with_backoff_and_recovers(make_rig, spin_until) -> None:
    rig = make_rig(frame_timeout_s=0.2, reconnect_backoff_s=0.02, reconnect_backoff_max_s=0.1)
    rng = np.random.default_rng(2)
    assert spin_until(lambda: len(rig.images) > 0, every=lambda: rig.cam.push(random_image(rng)))
    assert spin_until(lambda: rig.diags and rig.diags[-1].level == DiagnosticStatus.OK)
    # Unplug: frames stop, the node notices, closes, and keeps trying to reopen.
    rig.cam.plugged = False
    rig.cam.stop()
    assert spin_until(lambda: rig.node.counts["open_failures"] >= 3)
    levels = {d.level for d in rig.diags}
    assert DiagnosticStatus.WARN in levels and DiagnosticStatus.ERROR in levels
    assert any("no frames" in d.message for d in rig.diags)
    assert rig.diags[-1].level == DiagnosticStatus.ERROR
    # Replug: the node reopens and publishes again.
    starts = rig.cam.starts
    rig.cam.plugged = True
    n = len(rig.images)
    assert spin_until(lambda: rig.cam.starts > starts and len(rig.images) > n,
                      every=lambda: rig.cam.push(random_image(rng)))
    assert spin_until(lambda: rig.diags[-1].level == DiagnosticStatus.OK)


def test_stamp_mapper_domains() -> None:
    now = [5_000_000_000]
    mapper = StampMapper(lambda: now[0])
    # Host-clock domains pass through (ms -> ns).
    assert mapper.stamp_ns(1700000000123.5, rs.timestamp_domain.system_time) == 1700000000123500000
    assert mapper.stamp_ns(42.0, rs.timestamp_domain.global_time) == 42_000_000
    # Hardware clock: anchored at the first frame, device spacing after; re-anchored on reset.
    assert mapper.stamp_ns(1000.0, rs.timestamp_domain.hardware_clock) == 5_000_000_000
    now[0] = 9_000_000_000
    assert mapper.stamp_ns(1010.0, rs.timestamp_domain.hardware_clock) == 5_010_000_000
    mapper.reset()
    assert mapper.stamp_ns(3.0, rs.timestamp_domain.hardware_clock) == 9_000_000_000


def test_pipeline_source_checks_for_a_device_before_starting() -> None:
    source = PipelineSource(CameraConfig(serial_no="000000000000"))
    # No camera on test machines, or not this serial: refused at once, not after ~15 s.
    with pytest.raises(CameraUnavailableError, match="RealSense"):
        source.start()
    assert source.wait(10) is None
    source.stop()


@pytest.mark.parametrize(("name", "value"), [("fps", 0), ("width", 5.0),
                                             ("reconnect_backoff_max_s", 0.02)])
def test_bad_parameters_fail_at_startup(ros, name, value) -> None:
    with pytest.raises(ConfigError, match=name):
        CameraNode(source_factory=SoftwareCamera,
                   parameter_overrides=[Parameter(name, value=value)])


def test_frame_errors_reopen_the_camera(make_rig, spin_until) -> None:
    rig = make_rig()
    rng = np.random.default_rng(3)
    assert spin_until(lambda: len(rig.images) > 0, every=lambda: rig.cam.push(random_image(rng)))
    starts = rig.cam.starts
    rig.cam.failing_reads = 2
    assert spin_until(lambda: rig.cam.starts >= starts + 2)
    assert any(d.level == DiagnosticStatus.WARN and "simulated USB error" in d.message
               for d in rig.diags)
    n = len(rig.images)
    assert spin_until(lambda: len(rig.images) > n, every=lambda: rig.cam.push(random_image(rng)))
    assert rig.node._thread.is_alive()
