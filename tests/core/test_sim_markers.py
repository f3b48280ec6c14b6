"""The twin's marker option (fowm_core.sim.markers) and `fowm calibrate` on it: markers change
neither the default model nor the physics, the rendered markers sit where the geometry says, and
the tracker and the calibration find them against the twin's ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fowm_core.errors import EnvError
from fowm_core.jobs import cli
from fowm_core.perception import geometry
from fowm_core.perception import markers as mk
from fowm_core.perception.tracker import MarkerDetector, MarkerTracker
from fowm_core.sim import XarmEnv, make_env
from fowm_core.sim import markers as plates
from fowm_core.sim.scripted import ScriptedPolicy


def test_default_model_has_no_markers() -> None:
    env = make_env("push", "state")
    names = {env.model.site(i).name for i in range(env.model.nsite)}
    textures = {env.model.texture(i).name for i in range(env.model.ntex)}
    assert not any("marker" in n for n in names) and not any("aruco" in t for t in textures)
    marked = make_env("push", "state", markers=True).model
    assert "object_marker_1" in {marked.site(i).name for i in range(marked.nsite)}


@pytest.mark.parametrize("task", ["push", "lift"])
def test_markers_leave_the_physics_unchanged(task: str) -> None:
    runs = []
    for markers in (False, True):
        env = make_env(task, "state", seed=3, markers=markers)
        policy = ScriptedPolicy(task, rng=np.random.default_rng(0))
        _, info = env.reset()
        qpos = [env.data.qpos.copy()]
        for _ in range(10):
            _, _, _, _, info = env.step(policy.act(info["task_state"]))
            qpos.append(env.data.qpos.copy())
        runs.append(np.array(qpos))
        env.close()
    np.testing.assert_array_equal(runs[0], runs[1])


def _projected_corners(env: XarmEnv, site: str, intr: geometry.Intrinsics) -> np.ndarray:
    sid = env.model.site(site).id
    half = env.model.site_size[sid][0] * mk.MARKER_FRACTION
    rot = env.data.site_xmat[sid].reshape(3, 3)
    face = env.data.site_xpos[sid] + rot[:, 2] * plates.HALF_PLATE
    t_cam_world = geometry.invert(env.camera_pose())
    out = []
    for sx, sy in ((-1, 1), (1, 1), (1, -1), (-1, -1)):
        p = geometry.apply(t_cam_world, face + rot @ np.array([sx * half, sy * half, 0.0]))
        uv = intr.matrix() @ p
        out.append(uv[:2] / uv[2])
    return np.array(out)


def test_rendered_markers_sit_where_the_geometry_says() -> None:
    env = make_env("push", "state", seed=1, markers=True)
    env.reset()
    intr = env.camera_intrinsics(640, 480)
    layout = mk.twin_layout("push")
    found, _ = MarkerDetector(layout.sizes(), mk.DICTIONARY).detect(env.render(640, 480), intr)
    assert mk.GOAL_ID in {d.marker_id for d in found}
    assert {d.marker_id for d in found} & set(mk.OBJECT_IDS)
    for d in found:
        site = plates.GOAL_SITE if d.marker_id == mk.GOAL_ID else f"object_marker_{d.marker_id}"
        # Same corners in the same order: intrinsics, camera pose and texture mapping agree.
        assert np.abs(d.corners - _projected_corners(env, site, intr)).max() < 1.5
    env.close()


@pytest.mark.parametrize("task", ["reach", "push", "lift"])
def test_tracker_on_a_rendered_frame(task: str) -> None:
    env = make_env(task, "state", seed=2, markers=True)
    env.reset()
    tracker = MarkerTracker(mk.twin_layout(task), env.camera_pose())
    frame = tracker.track(env.render(640, 480), env.camera_intrinsics(640, 480))
    state = env.task_state()
    if state.obj is not None:
        assert frame.object is not None
        assert np.linalg.norm(frame.object.position - state.obj) < 0.03
    if task != "lift":
        assert frame.goal is not None
        assert np.linalg.norm(frame.goal.position - state.goal) < 0.04
    assert frame.goal is None or task != "lift"
    env.close()


def test_tracker_camera_and_the_gripper_plate_only_when_asked() -> None:
    plain = make_env("reach", "state", markers=True)
    assert plain.model.cam(plates.TRACKER_CAMERA).id >= 0
    assert plates.GRIPPER_SITE not in {plain.model.site(i).name for i in range(plain.model.nsite)}
    with pytest.raises(EnvError, match="tracker_cam"):
        make_env("reach", "state").render(64, 48, plates.TRACKER_CAMERA)
    calib = XarmEnv("reach", "state", gripper_marker=plates.TRACKER_CAMERA)
    calib.reset(seed=0)
    intr = calib.camera_intrinsics(640, 480, plates.TRACKER_CAMERA)
    found, _ = MarkerDetector({mk.GRIPPER_ID: mk.GRIPPER_PLATE_M * mk.MARKER_FRACTION},
                              mk.DICTIONARY).detect(
        calib.render(640, 480, plates.TRACKER_CAMERA), intr)
    assert [d.marker_id for d in found] == [mk.GRIPPER_ID]
    calib.close()


def test_goal_plate_follows_the_goal_and_hold_tool_reaches_a_pose() -> None:
    env = make_env("reach", "state", seed=5, markers=True)
    env.reset()
    sid = env.model.site(plates.GOAL_SITE).id
    face = env.data.site_xpos[sid][2] + plates.HALF_PLATE
    np.testing.assert_allclose(env.data.site_xpos[sid][:2], env.task_state().goal[:2])
    assert face == pytest.approx(env.task_state().goal[2] + mk.GOAL_LIFT_M)
    target = np.array([1.45, 0.3, 0.75])
    tilt = geometry.rotation_from_quat([np.sin(0.2), 0.0, 0.0, np.cos(0.2)])
    q = geometry.quat_xyzw(geometry.rotation_from_quat([1.0, 0, 0, 0]) @ tilt)
    env.hold_tool(target, np.array([q[3], q[0], q[1], q[2]]))
    pos, quat = env.eef_pose()
    assert np.linalg.norm(pos - target) < 0.01
    reached = geometry.rotation_from_quat([quat[1], quat[2], quat[3], quat[0]])
    assert geometry.rotation_angle_deg(reached @ tilt.T @ np.diag([1.0, -1, -1])) < 2.0
    env.close()


def test_calibration_on_the_twin_finds_the_true_camera(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "camera.yaml"
    assert cli.main(["calibrate", "--out", str(out), "--poses", "16", "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert "error_vs_truth_mm" in printed and "residual_mm" in printed
    env = make_env("reach", "state", markers=True)
    truth = env.camera_pose(plates.TRACKER_CAMERA)
    mm, deg = geometry.pose_error(geometry.load_extrinsics(out), truth)
    assert mm < 25 and deg < 1.5, (mm, deg)
