"""The perception layer (fowm_core.perception): transforms and the extrinsics file, ArUco poses on
a synthetic image with a known answer, the joint solve, and hand-eye calibration with a known
answer."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from fowm_core.errors import PerceptionError
from fowm_core.perception import calibration, geometry
from fowm_core.perception import markers as mk
from fowm_core.perception.tracker import MarkerDetector, MarkerTracker, marker_corners_3d

INTR = geometry.Intrinsics.from_fovy(640, 480, 50.0)


def _random_pose(rng: np.random.Generator, spread: float = 1.0) -> np.ndarray:
    rot, _ = cv2.Rodrigues(rng.normal(0, spread, 3))
    return geometry.transform(rot, rng.normal(0, 0.5, 3))


def _render_plate(t_cam_marker: np.ndarray, marker_id: int, marker_m: float,
                  canvas: np.ndarray | None = None) -> np.ndarray:
    """A synthetic image: the marker plate warped into the camera by its true pose."""
    plate = mk.plate_image(marker_id, cell_px=40)
    side_px = plate.shape[0]
    plate_m = marker_m / mk.MARKER_FRACTION
    h = plate_m / 2
    src = np.array([[0, 0], [side_px, 0], [side_px, side_px], [0, side_px]], np.float32) - 0.5
    corners = np.array([[-h, h, 0], [h, h, 0], [h, -h, 0], [-h, -h, 0]])
    cam = np.array([geometry.apply(t_cam_marker, c) for c in corners])
    uv = (INTR.matrix() @ cam.T).T
    dst = (uv[:, :2] / uv[:, 2:]).astype(np.float32)
    warp = cv2.getPerspectiveTransform(src, dst)
    img = np.full((480, 640), 90, np.uint8) if canvas is None else canvas
    mask = cv2.warpPerspective(np.full_like(plate, 255), warp, (640, 480), flags=cv2.INTER_AREA)
    warped = cv2.warpPerspective(plate, warp, (640, 480), flags=cv2.INTER_AREA)
    return np.where(mask > 127, warped, img).astype(np.uint8)


def _look_at(eye: np.ndarray) -> np.ndarray:
    """T_world_camera (optical frame) for a camera at ``eye`` looking at the origin."""
    z = -eye / np.linalg.norm(eye)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    return geometry.transform(np.column_stack([x, np.cross(z, x), z]), eye)


def test_transforms_round_trip() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        t = _random_pose(rng, 2.0)
        np.testing.assert_allclose(geometry.invert(t) @ t, np.eye(4), atol=1e-12)
        q = geometry.quat_xyzw(t[:3, :3])
        assert q[3] >= 0 and abs(np.linalg.norm(q) - 1) < 1e-12
        np.testing.assert_allclose(geometry.rotation_from_quat(q), t[:3, :3], atol=1e-9)
    assert geometry.pose_error(t, t) == pytest.approx((0.0, 0.0), abs=1e-4)


def test_mujoco_camera_to_optical_frame() -> None:
    # A MuJoCo camera looks along its -z with y up: the optical frame looks along +z, y down.
    t = geometry.optical_from_mujoco(np.array([1.0, 2.0, 3.0]), np.eye(3).reshape(-1))
    np.testing.assert_allclose(t[:3, 2], [0, 0, -1])
    np.testing.assert_allclose(t[:3, 1], [0, -1, 0])
    np.testing.assert_allclose(t[:3, 3], [1, 2, 3])


def test_intrinsics_from_fovy_and_camera_info() -> None:
    assert INTR.fy == pytest.approx(240 / np.tan(np.radians(25)))
    assert (INTR.cx, INTR.cy) == (319.5, 239.5)
    k = INTR.matrix().reshape(-1)
    assert geometry.Intrinsics.from_k(k, 640, 480) == INTR
    with pytest.raises(PerceptionError, match="9"):
        geometry.Intrinsics.from_k(k[:5], 640, 480)
    with pytest.raises(PerceptionError, match="fx"):
        geometry.Intrinsics.from_k(np.zeros(9), 640, 480)
    with pytest.raises(PerceptionError, match="D has 100"):     # OpenCV would raise per image
        geometry.Intrinsics.from_k(k, 640, 480, [0.0] * 100)
    assert geometry.Intrinsics.from_k(k, 640, 480, [0.0] * 8).dist == (0.0,) * 8


def test_extrinsics_yaml_round_trip(tmp_path: Path) -> None:
    t = _random_pose(np.random.default_rng(1))
    path = geometry.save_extrinsics(tmp_path / "cam.yaml", t, {"residual_mm": 1.5})
    np.testing.assert_allclose(geometry.load_extrinsics(path), t, atol=1e-12)
    assert yaml.safe_load(path.read_text())["calibration"]["residual_mm"] == 1.5


@pytest.mark.parametrize(("doc", "match"), [
    ({"translation_m": [0, 0, 0]}, "rotation_xyzw"),
    ({"translation_m": [0, 0, 0], "rotation_xyzw": [0, 0, 0, 2]}, "unit quaternion"),
    ({"translation_m": [0, 0, float("nan")], "rotation_xyzw": [0, 0, 0, 1]}, "finite"),
    ({"parent_frame": "world", "translation_m": [0, 0, 0], "rotation_xyzw": [0, 0, 0, 1]},
     "link_base"),
    ([1, 2], "mapping"),
])
def test_extrinsics_refuses_bad_files(tmp_path: Path, doc: object, match: str) -> None:
    path = tmp_path / "cam.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(PerceptionError, match=match):
        geometry.load_extrinsics(path)
    with pytest.raises(PerceptionError, match="fowm calibrate"):
        geometry.load_extrinsics(tmp_path / "missing.yaml")


def test_plate_image_and_layout_checks() -> None:
    img = mk.plate_image(7, cell_px=10)
    assert img.shape == (80, 80) and img[:10].min() == 255       # the white quiet zone
    with pytest.raises(PerceptionError, match="not in"):
        mk.plate_image(50)
    with pytest.raises(PerceptionError, match="unknown"):
        mk.dictionary("DICT_NOPE")
    with pytest.raises(PerceptionError, match="placements"):
        mk.MarkerSet((1, 2), 0.04)
    with pytest.raises(PerceptionError, match="repeat"):
        mk.Layout(mk.MarkerSet((3,), 0.04), mk.MarkerSet((3,), 0.04))
    layout = mk.twin_layout("push")
    assert layout.object.ids == mk.OBJECT_IDS and layout.goal.ids == (mk.GOAL_ID,)
    assert mk.twin_layout("lift").goal is None and mk.twin_layout("reach").object is None


def test_pnp_recovers_a_synthetic_marker_pose() -> None:
    rng = np.random.default_rng(2)
    side = 0.08
    det = MarkerDetector({4: side}, mk.DICTIONARY)
    for _ in range(5):
        # Tilted by 30-45 degrees: a near-frontal square's tilt is ambiguous (IPPE's two
        # solutions), which the joint solve over several faces removes.
        tilt = rng.choice([-1, 1]) * rng.uniform(0.5, 0.8)
        rot, _ = cv2.Rodrigues(np.array([np.pi + tilt, *rng.uniform(-0.2, 0.2, 2)]))
        t_cam_marker = geometry.transform(rot, [*rng.uniform(-0.1, 0.1, 2), rng.uniform(0.5, 0.8)])
        found, rejected = det.detect(_render_plate(t_cam_marker, 4, side), INTR)
        assert rejected == 0 and [d.marker_id for d in found] == [4]
        mm, deg = geometry.pose_error(found[0].t_cam_marker, t_cam_marker)
        assert mm < 10.0 and deg < 5.0, (mm, deg)
        assert found[0].reproj_px < 0.5


def test_tracker_point_behind_the_marker_and_nothing_when_lost() -> None:
    side, offset = 0.06, 0.03
    layout = mk.Layout(mk.MarkerSet((2,), side, offset), None)
    t_base_cam = _random_pose(np.random.default_rng(3))
    tracker = MarkerTracker(layout, t_base_cam)
    rot, _ = cv2.Rodrigues(np.array([np.pi + 0.3, 0.2, 0.1]))
    t_cam_marker = geometry.transform(rot, [0.02, -0.01, 0.6])
    frame = tracker.track(_render_plate(t_cam_marker, 2, side), INTR)
    truth = geometry.apply(t_base_cam @ t_cam_marker, [0, 0, -offset])
    assert frame.object is not None and frame.object.marker_ids == (2,)
    assert np.linalg.norm(frame.object.position - truth) < 0.01
    empty = tracker.track(np.full((480, 640, 3), 128, np.uint8), INTR)
    assert empty.object is None and empty.goal is None and empty.reproj_px is None
    other = tracker.track(_render_plate(t_cam_marker, 9, side), INTR)   # not a configured id
    assert other.object is None and other.detections == []
    with pytest.raises(PerceptionError, match="CameraInfo"):
        tracker.track(np.zeros((240, 320), np.uint8), INTR)
    with pytest.raises(PerceptionError, match="uint8"):
        tracker.track(np.zeros((480, 640, 4), np.uint8), INTR)


def test_joint_solve_over_two_cube_faces() -> None:
    depth, side = 0.05, 0.07
    placements = mk.cube_placements((1, 2), depth)
    layout = mk.Layout(mk.MarkerSet((1, 2), side, depth, placements), None)
    tracker = MarkerTracker(layout, np.eye(4))
    # The camera above the cube's +x side, so its top (id 1) and +x face (id 2) both face it.
    t_cam_cube = geometry.invert(_look_at(np.array([0.45, 0.1, 0.45])))
    img = None
    for marker_id in (1, 2):
        img = _render_plate(t_cam_cube @ placements[marker_id], marker_id, side, img)
    frame = tracker.track(img, INTR)
    assert frame.object is not None and frame.object.marker_ids == (1, 2)
    assert np.linalg.norm(frame.object.position - t_cam_cube[:3, 3]) < 0.004
    angle = geometry.rotation_angle_deg(
        geometry.rotation_from_quat(frame.object.quat_xyzw) @ t_cam_cube[:3, :3].T)
    assert angle < 2.0


def test_corner_order_matches_ippe_square() -> None:
    c = marker_corners_3d(2.0)
    np.testing.assert_allclose(c[0], [-1, 1, 0])
    np.testing.assert_allclose(c[2], [1, -1, 0])


def _hand_eye_samples(n: int, noise_mm: float = 0.0, noise_deg: float = 0.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    t_base_cam = geometry.transform(cv2.Rodrigues(np.array([2.0, -0.5, 0.3]))[0], [0.9, 1.0, 1.1])
    t_gripper_marker = geometry.transform(cv2.Rodrigues(np.array([1.5, 0.0, 0.0]))[0],
                                          [0.0, -0.05, 0.05])
    grippers, seen = [], []
    for position, q in calibration.poses(np.array([1.25, 0.0, 0.56]), np.array([1.7, 0.6, 0.9]),
                                         n, np.array([0, 1, 0, 0]), seed=seed):
        t_bg = geometry.transform(geometry.rotation_from_quat([q[1], q[2], q[3], q[0]]), position)
        t_cm = geometry.invert(t_base_cam) @ t_bg @ t_gripper_marker
        jitter, _ = cv2.Rodrigues(rng.normal(0, np.radians(noise_deg) + 1e-12, 3))
        t_cm = geometry.transform(t_cm[:3, :3] @ jitter,
                                  t_cm[:3, 3] + rng.normal(0, noise_mm / 1000 + 1e-12, 3))
        grippers.append(t_bg)
        seen.append(t_cm)
    return t_base_cam, grippers, seen


@pytest.mark.parametrize("method", sorted(calibration.METHODS))
def test_hand_eye_recovers_a_known_camera_pose(method: str) -> None:
    truth, grippers, seen = _hand_eye_samples(12)
    result = calibration.solve_eye_to_hand(grippers, seen, method)
    mm, deg = geometry.pose_error(result.t_base_cam, truth)
    assert mm < 0.01 and deg < 0.001, (mm, deg)
    assert result.residual_mm < 0.01 and result.residual_deg < 0.001


def test_hand_eye_with_noise_and_its_residual() -> None:
    truth, grippers, seen = _hand_eye_samples(30, noise_mm=1.0, noise_deg=0.2, seed=4)
    result = calibration.solve_eye_to_hand(grippers, seen)
    mm, deg = geometry.pose_error(result.t_base_cam, truth)
    assert mm < 10 and deg < 0.5, (mm, deg)
    assert 0.5 < result.residual_mm < 10      # the noise shows in the residual


def test_calibration_refuses_too_few_or_unknown() -> None:
    _, grippers, seen = _hand_eye_samples(5)
    with pytest.raises(PerceptionError, match="at least"):
        calibration.solve_eye_to_hand(grippers[:3], seen[:3])
    with pytest.raises(PerceptionError, match="same number"):
        calibration.solve_eye_to_hand(grippers, seen[:4])
    with pytest.raises(PerceptionError, match="unknown"):
        calibration.solve_eye_to_hand(grippers, seen, "magic")
    with pytest.raises(PerceptionError, match="non-empty box"):
        calibration.poses(np.zeros(3), np.full(3, 0.05), 10, np.array([1, 0, 0, 0]))


def test_calibration_poses_stay_in_the_box_and_bounded() -> None:
    low, high = np.array([1.25, 0.0, 0.56]), np.array([1.7, 0.6, 0.9])
    base = np.array([0.0, 1.0, 0.0, 0.0])
    out = calibration.poses(low, high, 40, base, max_tilt_deg=20, max_turn_deg=30, margin_m=0.05)
    base_rot = geometry.rotation_from_quat([1.0, 0.0, 0.0, 0.0])
    for position, q in out:
        assert (position >= low + 0.05).all() and (position <= high - 0.05).all()
        rot = geometry.rotation_from_quat([q[1], q[2], q[3], q[0]])
        assert geometry.rotation_angle_deg(rot @ base_rot.T) <= np.sqrt(2 * 20**2 + 30**2) + 1e-6


def test_a_partly_hidden_marker_is_dropped() -> None:
    side = 0.08
    rot, _ = cv2.Rodrigues(np.array([np.pi + 0.6, 0.1, 0.0]))
    t_cam_marker = geometry.transform(rot, [0.0, 0.0, 0.6])
    img = _render_plate(t_cam_marker, 4, side)
    assert [d.marker_id for d in MarkerDetector({4: side}, mk.DICTIONARY).detect(img, INTR)[0]]
    # A dark finger across the white margin of one edge: the code may still decode.
    found, _ = MarkerDetector({4: side}, mk.DICTIONARY, check_margin=False).detect(img, INTR)
    c = found[0].corners
    x0, y0 = np.min(c, axis=0).astype(int)
    x1, _ = np.max(c, axis=0).astype(int)
    hidden = img.copy()
    hidden[y0 - 6:y0 + 1, (x0 + x1) // 2 - 4:(x0 + x1) // 2 + 4] = 40
    found, rejected = MarkerDetector({4: side}, mk.DICTIONARY).detect(hidden, INTR)
    assert found == [] and rejected == 1


def test_a_fallback_refinement_is_not_mixed_into_better_corners() -> None:
    from fowm_core.perception.tracker import Detection

    depth = 0.03
    layout = mk.Layout(mk.MarkerSet((1, 2), 0.05, depth, mk.cube_placements((1, 2), depth)), None)
    tracker = MarkerTracker(layout, np.eye(4))
    corners = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], dtype=np.float64)
    first = Detection(1, corners, geometry.transform(np.eye(3), [0, 0, 1.0]), 0.1, 0)
    fallback = Detection(2, corners * 2, geometry.transform(np.eye(3), [0.5, 0, 1.0]), 0.1, 1)
    pose = tracker._locate(layout.object, [fallback, first])
    assert pose is not None and pose.marker_ids == (1,)
    np.testing.assert_allclose(pose.position, [0, 0, 1.0 - depth])
    only_fallback = tracker._locate(layout.object, [fallback])
    assert only_fallback is not None and only_fallback.marker_ids == (2,)
