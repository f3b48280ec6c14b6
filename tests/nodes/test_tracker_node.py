"""fowm_tracker on real rclpy, fed with the twin's rendered marker frames: poses stamped with the
image's stamp, nothing published while markers are lost, malformed images refused without
stopping the node, diagnostics."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from fowm.nodes.tracker_node import TrackerNode
from fowm.ros import qos
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from fowm_core.contract import topics
from fowm_core.data import convert
from fowm_core.errors import ConfigError
from fowm_core.perception import geometry
from fowm_core.sim import make_env

COLLECT = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
W, H = 640, 480


@dataclass
class Scene:
    image: np.ndarray
    obj: np.ndarray
    goal: np.ndarray
    fovy: float


@pytest.fixture(scope="module")
def scene() -> Scene:
    env = make_env("push", "state", seed=4, markers=True)
    env.reset()
    state = env.task_state()
    out = Scene(env.render(W, H), state.obj, state.goal, float(env.model.cam("camera0").fovy[0]))
    env.close()
    return out


@pytest.fixture
def extrinsics(tmp_path: Path) -> Path:
    env = make_env("push", "state")
    path = geometry.save_extrinsics(tmp_path / "camera.yaml", env.camera_pose())
    env.close()
    return path


@dataclass
class Rig:
    node: TrackerNode
    client: Node
    objects: list[PoseStamped] = field(default_factory=list)
    goals: list[PoseStamped] = field(default_factory=list)
    diags: list[DiagnosticStatus] = field(default_factory=list)

    def __post_init__(self) -> None:
        c = self.client
        c.create_subscription(PoseStamped, topics.OBJECT_POSE, self.objects.append, COLLECT)
        c.create_subscription(PoseStamped, topics.GOAL_POSE, self.goals.append, COLLECT)
        c.create_subscription(DiagnosticArray, topics.DIAGNOSTICS,
                              lambda m: self.diags.extend(
                                  s for s in m.status if s.name.startswith("fowm_tracker")),
                              qos.DIAGNOSTICS)
        self.image_pub = c.create_publisher(Image, topics.COLOR_IMAGE, qos.SENSOR_PUB)
        self.info_pub = c.create_publisher(CameraInfo, topics.COLOR_INFO, qos.SENSOR_PUB)

    def send(self, image: np.ndarray | Image, stamp: int, fovy: float | None = 50.0) -> None:
        if fovy is not None:
            self.info_pub.publish(_info(stamp, fovy))
        msg = image if isinstance(image, Image) else _image(image, stamp)
        self.image_pub.publish(msg)


def _info(stamp: int, fovy: float) -> CameraInfo:
    ref = convert.camera_info_msg(stamp, W, H, fovy)
    msg = CameraInfo(width=W, height=H, distortion_model=ref.distortion_model,
                     d=[float(v) for v in ref.d], k=[float(v) for v in ref.k])
    msg.header.stamp = convert.to_time(stamp, type(msg.header.stamp))
    return msg


def _image(rgb: np.ndarray, stamp: int) -> Image:
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", step=3 * rgb.shape[1],
                data=rgb.tobytes())
    msg.header.stamp = convert.to_time(stamp, type(msg.header.stamp))
    return msg


@pytest.fixture
def make_rig(executor, spin_until, extrinsics):
    def make(**overrides: object) -> Rig:
        params = {"extrinsics_file": str(extrinsics), "task": "push", **overrides}
        node = TrackerNode(parameter_overrides=[Parameter(k, value=v)
                                                for k, v in params.items()])
        client = Node("tracker_test_client")
        executor.add_node(node)
        executor.add_node(client)
        rig = Rig(node, client)
        assert spin_until(lambda: rig.image_pub.get_subscription_count() > 0
                          and node.count_publishers(topics.COLOR_IMAGE) > 0)
        return rig
    return make


def _stamp(rig: Rig) -> int:
    return rig.node.get_clock().now().nanoseconds


def test_publishes_poses_with_the_image_stamp(make_rig, spin_until, scene: Scene) -> None:
    rig = make_rig()
    stamp = _stamp(rig)
    assert spin_until(lambda: rig.objects and rig.goals,
                      every=lambda: rig.send(scene.image, stamp, scene.fovy))
    for msgs, truth in ((rig.objects, scene.obj), (rig.goals, scene.goal)):
        msg = msgs[-1]
        assert convert.stamp_ns(msg) == stamp and msg.header.frame_id == topics.BASE_FRAME
        position, _ = convert.pose_arrays(msg)
        assert np.linalg.norm(position - truth) < 0.03


def test_lost_markers_publish_nothing(make_rig, spin_until, scene: Scene) -> None:
    rig = make_rig()
    blank = np.full((H, W, 3), 200, np.uint8)
    assert spin_until(lambda: rig.node.stats.frames >= 5,
                      every=lambda: rig.send(blank, _stamp(rig), scene.fovy))
    assert spin_until(lambda: any("marker lost" in d.message for d in rig.diags), timeout_s=5)
    assert rig.objects == [] and rig.goals == []
    status = next(d for d in reversed(rig.diags) if "marker lost" in d.message)
    values = {kv.key: kv.value for kv in status.values}
    assert values["object_rate"] == "0" and values["object_published"] == "0"
    assert {"latency_ms_mean", "process_ms_mean", "reproj_px_mean"} <= set(values)


def test_malformed_images_are_refused_and_tracking_goes_on(make_rig, spin_until,
                                                           scene: Scene) -> None:
    rig = make_rig()
    bad = _image(scene.image, _stamp(rig))
    bad.encoding = "yuv422"
    short = _image(scene.image, _stamp(rig))
    short.data = short.data[:1000]
    small = _image(scene.image[:240, :320].copy(), _stamp(rig))     # not the CameraInfo's size
    for msg in (bad, short, small):
        before = rig.node.inputs.total
        assert spin_until(lambda b=before: rig.node.inputs.total > b,
                          every=lambda m=msg: rig.send(m, 0, scene.fovy))
    assert rig.node.inputs.refused[topics.COLOR_IMAGE] >= 3
    assert rig.objects == [] and rig.goals == []
    stamp = _stamp(rig)
    assert spin_until(lambda: rig.objects, every=lambda: rig.send(scene.image, stamp, scene.fovy))
    assert spin_until(lambda: any("refused" in d.message for d in rig.diags), timeout_s=5)


def test_stale_images_and_a_second_image_publisher_give_no_pose(make_rig, spin_until,
                                                                  scene: Scene) -> None:
    rig = make_rig()
    old = _stamp(rig) - 10 * 10**9        # its pose would be stale by the time it is used
    assert spin_until(lambda: rig.node.inputs.total >= 2,
                      every=lambda: rig.send(scene.image, old, scene.fovy))
    assert "s ago" in rig.node.inputs.last and rig.objects == []
    other = rig.client.create_publisher(Image, topics.COLOR_IMAGE, qos.SENSOR_PUB)
    assert spin_until(lambda: rig.node.count_publishers(topics.COLOR_IMAGE) == 2)
    assert spin_until(lambda: rig.node.conflict_holds >= 3,
                      every=lambda: rig.send(scene.image, _stamp(rig), scene.fovy))
    assert rig.objects == [] and "more than one publisher" in rig.node.inputs.last
    rig.client.destroy_publisher(other)
    assert spin_until(lambda: rig.objects,
                      every=lambda: rig.send(scene.image, _stamp(rig), scene.fovy))


def test_images_before_camera_info_are_held(make_rig, spin_until, scene: Scene) -> None:
    rig = make_rig()
    assert spin_until(lambda: rig.node.frames_without_info >= 3,
                      every=lambda: rig.send(scene.image, _stamp(rig), fovy=None))
    assert rig.objects == [] and rig.goals == []


def test_refuses_to_start_without_extrinsics_or_layout(ros, tmp_path: Path,
                                                       extrinsics: Path) -> None:
    with pytest.raises(ConfigError, match="fowm calibrate"):
        TrackerNode(parameter_overrides=[Parameter("task", value="push")])
    with pytest.raises(ConfigError, match="cannot read"):
        TrackerNode(parameter_overrides=[Parameter("task", value="push"), Parameter(
            "extrinsics_file", value=str(tmp_path / "none.yaml"))])
    with pytest.raises(ConfigError, match="tracks nothing"):
        TrackerNode(parameter_overrides=[Parameter("layout", value="single"), Parameter(
            "extrinsics_file", value=str(extrinsics))])
    with pytest.raises(ConfigError, match="task"):
        TrackerNode(parameter_overrides=[Parameter("extrinsics_file", value=str(extrinsics))])


def test_single_layout_tracks_one_configured_marker(make_rig, spin_until, scene: Scene) -> None:
    # The goal plate alone, configured as a lab would: id, side and depth from the parameters.
    rig = make_rig(layout="single", goal_id=10, goal_marker_m=0.0675, goal_offset_m=0.002)
    stamp = _stamp(rig)
    assert spin_until(lambda: rig.goals, every=lambda: rig.send(scene.image, stamp, scene.fovy))
    assert rig.objects == []
    position, _ = convert.pose_arrays(rig.goals[-1])
    assert np.linalg.norm(position - scene.goal) < 0.04
