"""numpy ⇄ stock ROS 2 messages, as rosbags message objects (no rclpy import).

The same field conventions hold for rclpy messages (the nodes mirror them): SI units, quaternions in
ROS order (x, y, z, w), images rgb8 with ``step = 3·width``, stamps in integer nanoseconds.
``build_state`` is THE definition of the state vector, shared by the sim twin, the bag reader and
the planner node, so an observation means the same thing live, logged and simulated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rosbags.typesys import Stores, get_typestore

from fowm_core import tasks
from fowm_core.contract import topics
from fowm_core.contract.messages import EpisodeEvent, WeightsAnnouncement
from fowm_core.errors import FowmError
from fowm_core.tasks.base import PROPRIO_KEYS, STATE_PART_DIMS

TYPESTORE = get_typestore(Stores.ROS2_KILTED)
_T = TYPESTORE.types
ARM_JOINTS = tuple(f"joint{i}" for i in range(1, 8))
JOINT_NAMES = (*ARM_JOINTS, topics.GRIPPER_JOINT)


# -- the state vector ----------------------------------------------------------------------------
# In "state" mode the vector holds the task's state_keys, then the vectors between them (its
# relative_parts), as the reference simxarm's state observations do. Without them a small model
# must learn "the object moves only when the gripper is at it" from absolute coordinates that
# differ in the second decimal (docs/results.md, "What was tried"). "rgb"/"all" carry the 4-d
# proprio only (docs/algorithm.md §7.1: absolute eef xyz + gripper). Positions are absolute, base
# frame, m.
def state_keys(task: str, obs_mode: str) -> tuple[str, ...]:
    """The logged streams the state vector is built from (the planner node pairs these)."""
    keys = tasks.get(task).state_keys
    mode = str(obs_mode)
    if mode not in ("state", "rgb", "all"):
        msg = f"obs_mode={mode!r} is invalid: expected 'state', 'rgb' or 'all'"
        raise FowmError(msg)
    return keys if mode == "state" else PROPRIO_KEYS


def relative_parts(task: str, obs_mode: str) -> tuple[tuple[str, str], ...]:
    """(a, b) pairs whose difference a − b follows the positions in ``build_state``'s vector."""
    state_keys(task, obs_mode)          # validates both
    return tasks.get(task).relative_parts if str(obs_mode) == "state" else ()


def state_dim(task: str, obs_mode: str) -> int:
    """Length of ``build_state``'s vector: 4 in rgb/all mode; in state mode reach 10, push 16,
    lift 10."""
    return (sum(STATE_PART_DIMS[k] for k in state_keys(task, obs_mode))
            + 3 * len(relative_parts(task, obs_mode)))


def state_layout() -> list[dict[str, Any]]:
    """Every registered task's state-mode layout: [{task: state_keys}, {task: relative_parts}]
    (the bag cache keys its vectors on it, so a layout change misses the cache)."""
    every = [tasks.get(name) for name in tasks.names()]
    return [{t.name: t.state_keys for t in every}, {t.name: t.relative_parts for t in every}]


def build_state(task: str, obs_mode: str, eef: Sequence[float], gripper: float,
                obj: Sequence[float] | None = None,
                goal: Sequence[float] | None = None) -> np.ndarray:
    """The float32 state vector: the ``state_keys(task, obs_mode)`` parts, then (state mode) the
    differences of ``relative_parts``."""
    parts = {"eef": eef, "gripper": [gripper], "obj": obj, "goal": goal}
    out = {}
    for key in state_keys(task, obs_mode):
        value = parts[key]
        if value is None:
            msg = (f"task {task!r} in obs_mode {str(obs_mode)!r} needs the {key} position, got "
                   f"None; log {topics.OBJECT_POSE if key == 'obj' else topics.GOAL_POSE}")
            raise FowmError(msg)
        arr = np.asarray(value, dtype=np.float32).reshape(-1)
        if arr.shape != (STATE_PART_DIMS[key],):
            msg = f"state part {key} has shape {arr.shape}, expected ({STATE_PART_DIMS[key]},)"
            raise FowmError(msg)
        out[key] = arr
    relative = [out[a] - out[b] for a, b in relative_parts(task, obs_mode)]
    return np.concatenate([*out.values(), *relative])


# -- stamps and headers --------------------------------------------------------------------------
def to_time(stamp_ns: int, time_type: Any = None) -> Any:
    """A builtin_interfaces/Time of ``stamp_ns``: rosbags' class by default, or ``time_type``
    (e.g. rclpy's builtin_interfaces.msg.Time), which any class taking sec= and nanosec= fits."""
    stamp = int(stamp_ns)
    if not 0 <= stamp < 2**31 * 1_000_000_000:
        msg = (f"stamp {stamp} ns does not fit builtin_interfaces/Time (int32 seconds): expected "
               f"0 <= stamp < {2**31 * 1_000_000_000}")
        raise FowmError(msg)
    sec, nanosec = divmod(stamp, 1_000_000_000)
    return (time_type or _T["builtin_interfaces/msg/Time"])(sec=sec, nanosec=nanosec)


def header(stamp_ns: int, frame_id: str) -> Any:
    return _T["std_msgs/msg/Header"](stamp=to_time(stamp_ns), frame_id=frame_id)


def stamp_ns(msg: Any) -> int:
    """Header stamp of any stamped message, in nanoseconds."""
    stamp = msg.header.stamp
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


# -- images --------------------------------------------------------------------------------------
def _hwc(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3:
        msg = f"image must be uint8 (3,H,W) or (H,W,3), got {rgb.dtype} {rgb.shape}"
        raise FowmError(msg)
    # fowm's own layout (Episode.obs["rgb"]) is channels-first, so it wins when both ends are 3.
    if rgb.shape[0] == 3:
        return np.ascontiguousarray(rgb.transpose(1, 2, 0))
    if rgb.shape[-1] == 3:
        return np.ascontiguousarray(rgb)
    msg = f"image must have 3 channels first or last, got shape {rgb.shape}"
    raise FowmError(msg)


def image_msg(rgb: np.ndarray, stamp: int, frame_id: str = topics.CAMERA_FRAME) -> Any:
    """(3,H,W) or (H,W,3) uint8 → sensor_msgs/Image rgb8, step = 3·W ((3,H,3) is read as CHW)."""
    hwc = _hwc(rgb)
    height, width, _ = hwc.shape
    return _T["sensor_msgs/msg/Image"](
        header=header(stamp, frame_id), height=height, width=width, encoding="rgb8",
        is_bigendian=0, step=3 * width, data=hwc.reshape(-1))


def image_array(msg: Any) -> np.ndarray:
    """sensor_msgs/Image rgb8 or bgr8 → (3,H,W) uint8 (row padding in ``step`` is dropped)."""
    return np.ascontiguousarray(image_hwc(msg).transpose(2, 0, 1))


def image_hwc(msg: Any) -> np.ndarray:
    """sensor_msgs/Image rgb8 or bgr8 → (H,W,3) uint8 RGB, a view of the message's buffer."""
    if msg.encoding not in ("rgb8", "bgr8"):
        msg_text = f"image encoding {msg.encoding!r} is not supported: expected rgb8 or bgr8"
        raise FowmError(msg_text)
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.asarray(msg.data, dtype=np.uint8)
    if step < 3 * w or data.size < h * step:
        msg_text = f"image {w}x{h} with step {step} holds {data.size} bytes, expected {h * step}"
        raise FowmError(msg_text)
    hwc = data[: h * step].reshape(h, step)[:, : 3 * w].reshape(h, w, 3)
    return hwc[..., ::-1] if msg.encoding == "bgr8" else hwc


# How images are resized to the model's input, live (the planner node) and from bags (the reader):
# area averaging with OpenCV (INTER_AREA), the fastest of the paths measured
# (docs/results/camera_path_cpu.json). The name enters the bag cache key, so cached episodes
# resized the other way are read again.
RESIZE_METHOD = "cv2-inter-area"


def resize_rgb(rgb: np.ndarray, size: int) -> np.ndarray:
    """(N,3,H,W) uint8 → (N,3,size,size) uint8 by area averaging; unchanged if already sized
    (84x84 twin images go through untouched)."""
    if rgb.shape[-2:] == (size, size):
        return rgb
    return resize_rgb_cv2(rgb, size)


def resize_rgb_cv2(rgb: np.ndarray, size: int) -> np.ndarray:
    """OpenCV INTER_AREA on every (H, W) plane of a (..., H, W) uint8 array; area averaging is
    per channel, so this equals resizing each HWC image (tested), without transposing."""
    # opencv-python-headless (the sim and ros extras): imported here, only images need it.
    import cv2

    rgb = np.asarray(rgb)
    out = np.empty((*rgb.shape[:-2], size, size), np.uint8)
    for idx in np.ndindex(*rgb.shape[:-2]):
        out[idx] = cv2.resize(rgb[idx], (size, size), interpolation=cv2.INTER_AREA)
    return out


def model_image(msg: Any, size: int) -> np.ndarray:
    """sensor_msgs/Image → the model's (3, size, size) uint8 input: the same values as
    ``resize_rgb(image_array(msg)[None], size)[0]``, resizing the HWC buffer as it arrives and
    transposing only the small result (the camera path per control tick)."""
    hwc = image_hwc(msg)
    if hwc.shape[:2] == (size, size):
        return np.ascontiguousarray(hwc.transpose(2, 0, 1))
    import cv2

    small = cv2.resize(np.ascontiguousarray(hwc), (size, size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(small.transpose(2, 0, 1))


def resize_rgb_torch(rgb: np.ndarray, size: int) -> np.ndarray:
    """torch's antialiased bilinear (fowm's resize before issue 12; kept for the benchmark)."""
    x = torch.from_numpy(np.ascontiguousarray(rgb)).float()
    y = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return y.round().clamp(0, 255).to(torch.uint8).numpy()


def camera_info_msg(stamp: int, width: int, height: int, fovy_deg: float,
                    frame_id: str = topics.CAMERA_FRAME) -> Any:
    """A distortion-free pinhole CameraInfo; square pixels, f from the vertical field of view."""
    f = 0.5 * height / np.tan(np.deg2rad(fovy_deg) / 2)
    cx, cy = (width - 1) / 2, (height - 1) / 2
    return _T["sensor_msgs/msg/CameraInfo"](
        header=header(stamp, frame_id), height=height, width=width, distortion_model="plumb_bob",
        d=np.zeros(5), k=np.array([f, 0, cx, 0, f, cy, 0, 0, 1], dtype=np.float64),
        r=np.eye(3).reshape(-1), p=np.array([f, 0, cx, 0, 0, f, cy, 0, 0, 0, 1, 0], np.float64),
        binning_x=0, binning_y=0,
        roi=_T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                   do_rectify=False))


def camera_intrinsics(msg: Any) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) from a CameraInfo."""
    k = np.asarray(msg.k, dtype=np.float64)
    return float(k[0]), float(k[4]), float(k[2]), float(k[5])


# -- poses and joints ----------------------------------------------------------------------------
def pose_msg(stamp: int, position: Sequence[float],
             quat_xyzw: Sequence[float] = (0.0, 0.0, 0.0, 1.0),
             frame_id: str = topics.BASE_FRAME) -> Any:
    x, y, z = (float(v) for v in position)
    qx, qy, qz, qw = (float(v) for v in quat_xyzw)
    pose = _T["geometry_msgs/msg/Pose"](
        position=_T["geometry_msgs/msg/Point"](x=x, y=y, z=z),
        orientation=_T["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw))
    return _T["geometry_msgs/msg/PoseStamped"](header=header(stamp, frame_id), pose=pose)


def pose_arrays(msg: Any) -> tuple[np.ndarray, np.ndarray]:
    """PoseStamped → (position (3,), quaternion xyzw (4,)), float64."""
    p, q = msg.pose.position, msg.pose.orientation
    return np.array([p.x, p.y, p.z]), np.array([q.x, q.y, q.z, q.w])


def check_pose(msg: Any, topic: str) -> None:
    """FowmError unless ``msg`` (a live PoseStamped) is in the contract's frame (link_base; an
    unset frame is taken as it) and its orientation is a finite unit quaternion (|q| within 10 %).
    Live nodes call it before using a pose: a pose in another frame, or a malformed one, must
    not be planned or scored on (issue 11 suite)."""
    frame = msg.header.frame_id
    if frame not in ("", topics.BASE_FRAME):
        text = (f"{topic} is in frame {frame!r}, expected {topics.BASE_FRAME!r} (the topic "
                "contract, docs/design.md): transform it before publishing")
        raise FowmError(text)
    q = pose_arrays(msg)[1]
    norm = float(np.linalg.norm(q)) if np.isfinite(q).all() else math.nan
    if not abs(norm - 1.0) <= 0.1:
        text = f"{topic} orientation {q.tolist()} has norm {norm:.3g}: expected a unit quaternion"
        raise FowmError(text)


def joint_state_msg(stamp: int, joints: Sequence[float], gripper: float,
                    frame_id: str = "") -> Any:
    """Seven arm joints (rad) plus the gripper joint, named as xarm_ros2 does."""
    joints = np.asarray(joints, dtype=np.float64).reshape(-1)
    if joints.shape != (len(ARM_JOINTS),):
        msg = f"joint positions have shape {joints.shape}, expected ({len(ARM_JOINTS)},)"
        raise FowmError(msg)
    return _T["sensor_msgs/msg/JointState"](
        header=header(stamp, frame_id), name=list(JOINT_NAMES),
        position=np.append(joints, float(gripper)), velocity=np.zeros(0), effort=np.zeros(0))


def joint_state_arrays(msg: Any) -> tuple[np.ndarray, float]:
    """JointState → (arm joints (7,), gripper opening), looked up by name, not by position."""
    index = {name: i for i, name in enumerate(msg.name)}
    missing = [n for n in JOINT_NAMES if n not in index]
    if missing:
        msg_text = f"joint_states lacks {', '.join(missing)} (it has {', '.join(msg.name)})"
        raise FowmError(msg_text)
    pos = np.asarray(msg.position, dtype=np.float64).reshape(-1)
    if pos.size != len(msg.name):
        msg_text = (f"joint_states has {len(msg.name)} names but {pos.size} positions: expected "
                    "one position per name")
        raise FowmError(msg_text)
    return pos[[index[n] for n in ARM_JOINTS]], float(pos[index[topics.GRIPPER_JOINT]])


# -- actions, rewards, events --------------------------------------------------------------------
def action_msg(stamp: int, action: Sequence[float]) -> Any:
    """Normalized action → JointState; ``stamp`` is the stamp of the observation it answers."""
    action = np.asarray(action, dtype=np.float64).reshape(-1)
    if not 1 <= action.size <= len(topics.ACTION_NAMES):
        msg = f"action has {action.size} components, expected 1..{len(topics.ACTION_NAMES)}"
        raise FowmError(msg)
    return _T["sensor_msgs/msg/JointState"](
        header=header(stamp, topics.BASE_FRAME), name=list(topics.ACTION_NAMES[: action.size]),
        position=action, velocity=np.zeros(0), effort=np.zeros(0))


def action_array(msg: Any) -> np.ndarray:
    names = tuple(msg.name)
    if names != topics.ACTION_NAMES[: len(names)] or not names:
        msg_text = (f"action names {list(names)} are not a prefix of {list(topics.ACTION_NAMES)}; "
                    "publish actions with fowm_core.data.convert.action_msg")
        raise FowmError(msg_text)
    return np.asarray(msg.position, dtype=np.float32)


def reward_msg(value: float) -> Any:
    return _T["std_msgs/msg/Float32"](data=float(value))


def event_msg(event: EpisodeEvent) -> Any:
    """An episode event as std_msgs/String JSON (contract.messages.EpisodeEvent)."""
    return _T["std_msgs/msg/String"](data=event.to_json())


def weights_msg(announcement: WeightsAnnouncement) -> Any:
    """A weights announcement (checkpoint path, hash, step) as std_msgs/String JSON."""
    return _T["std_msgs/msg/String"](data=announcement.to_json())


def parse_event(msg: Any) -> EpisodeEvent:
    """std_msgs/String → EpisodeEvent; MessageError (a FowmError) when it does not fit."""
    return EpisodeEvent.from_json(msg.data)
