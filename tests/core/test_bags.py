"""Episode ⇄ rosbag2 codec: exact round trips, stamp pairing, rewards, corruption, interop."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer

from fowm_core import tasks
from fowm_core.contract import topics
from fowm_core.contract.messages import EpisodeEvent, WeightsAnnouncement
from fowm_core.data import convert
from fowm_core.data.bags import (
    CameraSpec,
    EpisodeLog,
    EpisodeRecorder,
    StepRecord,
    read_dataset,
    read_episode_bag,
    write_episode_bag,
)
from fowm_core.errors import BagError, FowmError

S0, PERIOD = 1_000_000_000, 160_000_000


def _log(task: str = "lift", steps: int = 5, size: int | None = 84, seed: int = 0) -> EpisodeLog:
    """A random episode whose logged rewards are the reference rewards of its states."""
    rng = np.random.default_rng(seed)
    records = []
    for t in range(steps + 1):
        rgb = rng.integers(0, 256, (3, size, size), dtype=np.uint8) if size else None
        records.append(StepRecord(
            S0 + t * PERIOD, rng.uniform(-0.3, 0.3, 3), float(rng.uniform(0, 0.85)),
            rng.uniform(-1, 1, 7), rng.uniform(-0.3, 0.3, 3) if task != "reach" else None,
            rng.uniform(-0.3, 0.3, 3) if task != "lift" else None, rgb))
    dim = tasks.get(task).action_dim
    actions = rng.uniform(-1, 1, (steps, dim)).astype(np.float32)
    obj_init_z = float(records[0].obj[2]) if task == "lift" else None
    reward = [tasks.reward(task, tasks.TaskState(r.eef, r.gripper, r.obj, r.goal, obj_init_z),
                           a) for r, a in zip(records[1:], actions, strict=True)]
    return EpisodeLog(task, records, actions, reward, episode=f"ep{seed}", seed=seed,
                      success=True, terminal=False, obj_init_z=obj_init_z,
                      camera=CameraSpec(size or 84, size or 84, 45.0) if size else None)


def _expected_state(log: EpisodeLog, obs_mode: str) -> np.ndarray:
    return np.stack([convert.build_state(log.task, obs_mode, s.eef, s.gripper, s.obj, s.goal)
                     for s in log.steps])


@pytest.mark.parametrize(("task", "obs_mode"), [("lift", "all"), ("push", "state"),
                                                ("reach", "rgb")])
def test_round_trip_gives_identical_transitions(tmp_path: Path, task: str, obs_mode: str) -> None:
    log = _log(task)
    bag = write_episode_bag(tmp_path / "ep", log)
    ep = read_episode_bag(bag, obs_mode=obs_mode)
    assert np.array_equal(ep.obs["state"], _expected_state(log, obs_mode))
    assert ep.obs["state"].shape[1] == convert.state_dim(task, obs_mode)
    if obs_mode != "state":
        assert np.array_equal(ep.obs["rgb"], np.stack([s.rgb for s in log.steps]))
    else:
        assert "rgb" not in ep.obs
    assert np.array_equal(ep.action, log.actions)
    assert np.array_equal(ep.reward, log.rewards)
    assert (ep.terminal, ep.success) == (False, True)
    assert ep.info["stamps_ns"].tolist() == [s.stamp_ns for s in log.steps]
    assert (ep.info["task"], ep.info["episode"], ep.info["seed"]) == (task, "ep0", 0)
    assert [p.name for p in tmp_path.iterdir()] == ["ep"]          # no temp directory left
    with pytest.raises(BagError, match="exists already"):
        write_episode_bag(bag, log)


def test_recorder_builds_the_log_from_sim_infos(tmp_path: Path) -> None:
    log = _log("lift", steps=3, size=None)

    def info(s: StepRecord) -> dict:      # what the sim twin's reset/step return as info
        return {"task_state": tasks.TaskState(s.eef, s.gripper, s.obj, None, log.obj_init_z),
                "joint_pos": np.append(s.joints, s.gripper)}

    rec = EpisodeRecorder("lift", episode=7, seed=3)
    rec.reset(info(log.steps[0]))
    for s, a, r in zip(log.steps[1:], log.actions, log.rewards, strict=True):
        rec.step(a, r, info(s))
    bag = write_episode_bag(tmp_path / "rec", rec.finish(success=True), camera=False)
    ep = read_episode_bag(bag, obs_mode="state")
    assert np.array_equal(ep.obs["state"], _expected_state(log, "state"))
    assert np.array_equal(ep.reward, log.rewards)
    assert ep.info["episode"] == 7
    assert ep.info["stamps_ns"].tolist() == [S0 + k * PERIOD for k in range(4)]


def test_logged_and_recomputed_rewards_agree_and_relabel(tmp_path: Path) -> None:
    log = _log("push", steps=6)
    bag = write_episode_bag(tmp_path / "push", log, camera=False)
    logged = read_episode_bag(bag, obs_mode="state")
    recomputed = read_episode_bag(bag, obs_mode="state", recompute_reward=True)
    assert logged.info["reward_source"] == "logged"
    assert recomputed.info["reward_source"] == "recomputed"
    assert np.allclose(recomputed.reward, logged.reward, rtol=0, atol=1e-6)
    # Relabel the push episode as reach: eef-to-goal instead of object-to-goal.
    reach = read_episode_bag(bag, task="reach", obs_mode="state", recompute_reward=True)
    want = [tasks.reward("reach", tasks.TaskState(s.eef, s.gripper, s.obj, s.goal), a)
            for s, a in zip(log.steps[1:], log.actions, strict=True)]
    assert np.allclose(reach.reward, want, atol=1e-6)
    assert not np.allclose(reach.reward, logged.reward)
    assert reach.obs["state"].shape == (7, convert.state_dim("reach", "state"))
    with pytest.raises(BagError, match="relabeling it as 'reach' needs recompute_reward=True"):
        read_episode_bag(bag, task="reach")


def _robot_bag(path: Path, action_stamps: list[int], final: int,
               holds: tuple[int, ...] = (), restamp: dict[int, int] | None = None) -> None:
    """A robot-like log: ee_pose at 25 Hz, joint states 3 ms later at 25 Hz, images 7 ms later,
    a goal latched once, actions on some observations, rewards without stamps. Each stream's
    values encode its own stamp, so the test can tell which message each observation used.
    Action k in ``holds`` is answered again 10 ms later with zero motion (a stale-data hold);
    ``restamp`` gives an action another stamp than the observation it was logged after."""
    ts = convert.TYPESTORE
    events: list[tuple[int, str, object]] = []
    grid = range(S0, final + 1, 40_000_000)
    for s in grid:
        events.append((s + 1_000_000, topics.EE_POSE, convert.pose_msg(s, [s * 1e-9, 0, 0])))
        events.append((s + 4_000_000, topics.JOINT_STATES,
                       convert.joint_state_msg(s + 3_000_000, np.zeros(7), (s + 3_000_000) * 1e-9)))
        obj_stamp = s + 7_000_000
        events.append((s + 9_000_000, topics.OBJECT_POSE,
                       convert.pose_msg(obj_stamp, [0, 0, obj_stamp * 1e-9])))
    events.append((S0, topics.GOAL_POSE, convert.pose_msg(S0, [0.1, 0.2, 0.3])))
    action_logs = [s + 30_000_000 for s in action_stamps] + [final + 40_000_000]
    for k, s in enumerate(action_stamps):
        stamp = (restamp or {}).get(s, s)
        events.append((action_logs[k], topics.ACTION, convert.action_msg(stamp, [k / 10] * 4)))
        if k in holds:
            events.append((action_logs[k] + 10_000_000, topics.ACTION,
                           convert.action_msg(s, [0.0] * 4)))
        # The reward of step k comes with the next observation, before the next action.
        events.append((action_logs[k + 1] - 5_000_000, topics.REWARD, convert.reward_msg(k)))
    events.append((S0, topics.EPISODE, convert.event_msg(EpisodeEvent(
        event="start", task="push", episode=1, seed=0))))
    events.append((final + 50_000_000, topics.EPISODE, convert.event_msg(EpisodeEvent(
        event="end", task="push", episode=1, success=False, terminal=False,
        final_stamp_ns=final))))
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {t: writer.add_connection(t, topics.MSG_TYPES[t], typestore=ts)
                 for t in {e[1] for e in events}}
        for log_ns, topic, msg in sorted(events, key=lambda e: e[0]):
            writer.write(conns[topic], log_ns, ts.serialize_cdr(msg, topics.MSG_TYPES[topic]))


def test_actions_pair_with_the_observation_of_their_exact_stamp(tmp_path: Path) -> None:
    action_stamps = [S0 + 40_000_000 * k for k in (0, 4, 7, 11)]     # irregular decisions
    final = S0 + 40_000_000 * 15
    _robot_bag(tmp_path / "robot", action_stamps, final)
    ep = read_episode_bag(tmp_path / "robot", obs_mode="state")
    stamps = [*action_stamps, final]
    assert ep.info["stamps_ns"].tolist() == stamps
    eef_x, gripper, obj_z, goal = (ep.obs["state"][:, i] for i in (0, 3, 6, 7))
    assert np.allclose(eef_x, np.array(stamps) * 1e-9)                    # the anchor itself
    assert np.allclose(gripper, (np.array(stamps) + 3_000_000) * 1e-9)    # its joint state
    assert np.allclose(obj_z, (np.array(stamps) + 7_000_000) * 1e-9)      # its object pose
    assert np.allclose(goal, 0.1)                                         # the latched goal
    assert np.allclose(ep.action[:, 0], [0.0, 0.1, 0.2, 0.3])
    assert ep.reward.tolist() == [0, 1, 2, 3]


def test_an_observation_answered_again_by_a_hold_keeps_the_command_in_force(
        tmp_path: Path) -> None:
    # The planner holds on an observation it already answered when the next one is late: the
    # robot then steps with the zero command, so that one labels the transition.
    action_stamps = [S0 + 40_000_000 * k for k in (0, 1, 2, 3)]
    _robot_bag(tmp_path / "robot", action_stamps, S0 + 40_000_000 * 4, holds=(1,))
    ep = read_episode_bag(tmp_path / "robot", obs_mode="state")
    assert ep.info["stamps_ns"].tolist() == [*action_stamps, S0 + 40_000_000 * 4]
    assert np.allclose(ep.action[:, 0], [0.0, 0.0, 0.2, 0.3])
    assert ep.reward.tolist() == [0, 1, 2, 3]
    assert ep.info["superseded_commands"] == 1


def test_actions_whose_stamps_go_back_are_refused(tmp_path: Path) -> None:
    action_stamps = [S0 + 40_000_000 * k for k in (0, 1, 2, 3)]
    _robot_bag(tmp_path / "robot", action_stamps, S0 + 40_000_000 * 4,
               restamp={action_stamps[2]: action_stamps[0]})
    with pytest.raises(BagError, match="action stamps that do not increase in log order"):
        read_episode_bag(tmp_path / "robot", obs_mode="state")


def test_action_without_its_observation_is_refused(tmp_path: Path) -> None:
    stray = S0 + 40_000_000 * 4 + 20_000_000          # between two ee_pose stamps
    _robot_bag(tmp_path / "robot", [S0, stray], S0 + 40_000_000 * 8)
    with pytest.raises(BagError, match=rf"robot has an action stamped {stray} ns but no complete"):
        read_episode_bag(tmp_path / "robot", obs_mode="state")


def test_images_are_resized_only_when_needed(tmp_path: Path) -> None:
    log = _log("lift", steps=2, size=96)
    bag = write_episode_bag(tmp_path / "big", log)
    assert read_episode_bag(bag, obs_mode="rgb", img_size=84).obs["rgb"].shape == (3, 3, 84, 84)
    same = read_episode_bag(bag, obs_mode="rgb", img_size=96).obs["rgb"]
    assert np.array_equal(same, np.stack([s.rgb for s in log.steps]))


def _truncate(bag: Path) -> None:
    mcap = next(bag.glob("*.mcap"))
    data = mcap.read_bytes()
    mcap.write_bytes(data[: len(data) // 2])


def test_corrupted_bags_raise_and_dataset_skips_them(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for k in range(4):
        write_episode_bag(root / f"ep{k}", _log("lift", steps=3, size=None, seed=k), camera=False)
    _truncate(root / "ep1")
    (root / "ep2" / "metadata.yaml").write_text("rosbag2_bagfile_information: {version: 9}\n")
    with pytest.raises(BagError, match=r"ep1 cannot be read .*corrupted or truncated"):
        read_episode_bag(root / "ep1")
    result = read_dataset(root, obs_mode="state")
    assert [e.info["episode"] for e in result.episodes] == ["ep0", "ep3"]
    assert [p.name for p, _ in result.failures] == ["ep1", "ep2"]
    assert all("BagError" not in why and str(p) in why for p, why in result.failures)


def test_dataset_cache_is_reused_and_exact(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for k in range(3):
        write_episode_bag(root / f"ep{k}", _log("push", steps=3, size=84, seed=k))
    fresh = read_dataset(root, obs_mode="all", cache=False).episodes
    first = read_dataset(root, obs_mode="all").episodes
    entries = sorted((root / ".fowm_cache").glob("*.npz"))
    inodes = [p.stat().st_ino for p in entries]
    second = read_dataset(root, obs_mode="all").episodes
    assert len(entries) == 3
    assert [p.stat().st_ino for p in entries] == inodes        # hits: nothing was rewritten
    for a, b, c in zip(fresh, first, second, strict=True):
        for ep in (b, c):
            assert np.array_equal(ep.obs["state"], a.obs["state"])
            assert np.array_equal(ep.obs["rgb"], a.obs["rgb"])
            assert np.array_equal(ep.action, a.action)
            assert np.array_equal(ep.reward, a.reward)
            assert ep.info["stamps_ns"].tolist() == a.info["stamps_ns"].tolist()
            assert (ep.success, ep.terminal, ep.info["bag"]) == (a.success, a.terminal,
                                                                 a.info["bag"])
    # Other read options are another cache entry, not a stale hit.
    read_dataset(root, obs_mode="state")
    assert len(list((root / ".fowm_cache").glob("*.npz"))) == 6


def test_dataset_cache_misses_when_the_state_layout_changes(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "data"
    write_episode_bag(root / "ep0", _log("push", steps=3, size=None, seed=0), camera=False)
    before = read_dataset(root, obs_mode="state").episodes[0].obs["state"]
    monkeypatch.setattr(tasks, "_REGISTRY", dict(tasks._REGISTRY))
    tasks.register(dataclasses.replace(tasks.get("push"), relative_parts=(("obj", "eef"),)),
                   replace=True)
    after = read_dataset(root, obs_mode="state").episodes[0].obs["state"]
    assert before.shape[1] == 16
    assert after.shape[1] == 13, "a vector cached under the old layout was served"


def test_bag_is_rosbag2_v9_mcap_and_readable_by_anyreader(tmp_path: Path) -> None:
    log = _log("lift", steps=2)
    log.weights.append((S0 + 5, WeightsAnnouncement(path="ckpt/step_10.safetensors", step=10)))
    bag = write_episode_bag(tmp_path / "ep", log)
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["version"] == 9
    assert meta["storage_identifier"] == "mcap"
    assert meta["relative_file_paths"] == ["ep.mcap"]
    qos = {t["topic_metadata"]["name"]: t["topic_metadata"]["offered_qos_profiles"]
           for t in meta["topics_with_message_count"]}
    assert qos[topics.WEIGHTS][0]["durability"] == "transient_local"
    assert qos[topics.WEIGHTS][0]["reliability"] == "reliable"
    assert qos[topics.COLOR_IMAGE] == []           # volatile topics play with the defaults
    with AnyReader([bag], default_typestore=convert.TYPESTORE) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
        assert counts[topics.EE_POSE] == 3
        assert counts[topics.ACTION] == 2
        assert counts[topics.WEIGHTS] == 1
        for conn, _, raw in reader.messages():
            assert reader.deserialize(raw, conn.msgtype) is not None


def test_messages_decode_with_rclpy(tmp_path: Path) -> None:
    from geometry_msgs.msg import PoseStamped
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CameraInfo, Image, JointState
    from std_msgs.msg import Float32, String

    classes = {"sensor_msgs/msg/Image": Image, "sensor_msgs/msg/CameraInfo": CameraInfo,
               "sensor_msgs/msg/JointState": JointState,
               "geometry_msgs/msg/PoseStamped": PoseStamped, "std_msgs/msg/Float32": Float32,
               "std_msgs/msg/String": String}
    log = _log("push", steps=1, size=8)
    bag = write_episode_bag(tmp_path / "ep", log)
    seen: dict[str, object] = {}
    with AnyReader([bag], default_typestore=convert.TYPESTORE) as reader:
        for conn, _, raw in reader.messages():
            seen.setdefault(conn.topic, deserialize_message(raw, classes[conn.msgtype]))
    image = seen[topics.COLOR_IMAGE]
    assert (image.encoding, image.width, image.height, image.step) == ("rgb8", 8, 8, 24)
    hwc = np.frombuffer(bytes(image.data), np.uint8).reshape(8, 8, 3)
    assert np.array_equal(hwc.transpose(2, 0, 1), log.steps[0].rgb)
    assert image.header.stamp.sec == 1 and image.header.stamp.nanosec == 0
    joints = seen[topics.JOINT_STATES]
    assert joints.name[-1] == topics.GRIPPER_JOINT
    assert np.allclose(joints.position[-1], log.steps[0].gripper)
    action = seen[topics.ACTION]
    assert list(action.name) == list(topics.ACTION_NAMES[:3])
    assert np.allclose(action.position, log.actions[0])
    pose = seen[topics.EE_POSE]
    assert np.allclose([pose.pose.position.x, pose.pose.position.y, pose.pose.position.z],
                       log.steps[0].eef)
    assert seen[topics.COLOR_INFO].k[0] > 0
    assert np.isclose(seen[topics.REWARD].data, log.rewards[0])
    assert '"event": "start"' in seen[topics.EPISODE].data


def test_bad_inputs_are_named(tmp_path: Path) -> None:
    log = _log("lift", steps=2, size=None)
    with pytest.raises(BagError, match="needs an rgb image at every step"):
        write_episode_bag(tmp_path / "x", log, camera=True)
    bag = write_episode_bag(tmp_path / "y", log, camera=False)
    with pytest.raises(BagError, match=r"no messages on /camera/camera/color/image_raw"):
        read_episode_bag(bag, obs_mode="rgb")
    shutil.rmtree(bag)
    with pytest.raises(BagError, match="y cannot be read"):
        read_episode_bag(bag)


def test_message_conversions_follow_the_contract() -> None:
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(3, 2, 3)          # (3, H=2, W=3)
    msg = convert.image_msg(rgb, 5)                  # ends are both 3: fowm's CHW is meant
    assert (msg.height, msg.width, msg.step) == (2, 3, 9)
    assert np.array_equal(convert.image_array(msg), rgb)
    assert np.array_equal(convert.image_array(convert.image_msg(rgb.transpose(1, 2, 0), 5)), rgb)
    # A driver's row padding and bgr8 order are undone.
    padded = np.zeros((2, 12), np.uint8)
    padded[:, :9] = rgb.transpose(1, 2, 0)[..., ::-1].reshape(2, 9)
    msg.data, msg.step, msg.encoding = padded.reshape(-1), 12, "bgr8"
    assert np.array_equal(convert.image_array(msg), rgb)
    fx, fy, cx, cy = convert.camera_intrinsics(convert.camera_info_msg(0, 84, 84, 90.0))
    assert np.isclose(fx, 42.0) and fx == fy and (cx, cy) == (41.5, 41.5)
    js = convert.joint_state_msg(0, np.arange(7), 0.4)
    js.name, js.position = js.name[::-1], js.position[::-1]              # order must not matter
    joints, gripper = convert.joint_state_arrays(js)
    assert joints.tolist() == list(range(7)) and gripper == 0.4
    js.position = js.position[:3]                                        # fewer than names
    with pytest.raises(FowmError, match="8 names but 3 positions"):
        convert.joint_state_arrays(js)
    assert convert.to_time(3_000_000_007).sec == 3 and convert.to_time(7).nanosec == 7
    with pytest.raises(FowmError, match="does not fit builtin_interfaces/Time"):
        convert.to_time(-1)
    assert convert.stamp_ns(convert.action_msg(3_000_000_007, [0.5])) == 3_000_000_007
    bad = convert.action_msg(0, [0.1, 0.2])
    bad.name = ["ee_dy", "ee_dx"]
    with pytest.raises(FowmError, match="not a prefix"):
        convert.action_array(bad)
    with pytest.raises(FowmError, match="needs the obj position"):
        convert.build_state("push", "state", [0, 0, 0], 0.1, None, [0, 0, 0])
    assert convert.build_state("push", "all", [1, 2, 3], 0.5).tolist() == [1, 2, 3, 0.5]


def test_check_pose_refuses_another_frame_and_a_broken_quaternion() -> None:
    pose = convert.pose_msg(5, np.array([0.3, 0.0, 0.2]), np.array([0.0, 0.0, 0.0, 1.0]))
    convert.check_pose(pose, topics.EE_POSE)                   # the contract's frame, unit q
    pose.header.frame_id = ""
    convert.check_pose(pose, topics.EE_POSE)                   # unset: taken as link_base
    pose.header.frame_id = "world"
    with pytest.raises(FowmError, match="frame 'world'"):
        convert.check_pose(pose, topics.EE_POSE)
    pose.header.frame_id = topics.BASE_FRAME
    for w in (0.0, float("nan"), 2.0):
        pose.pose.orientation.w = w
        with pytest.raises(FowmError, match="unit quaternion"):
            convert.check_pose(pose, topics.EE_POSE)
