"""rclpy messages the twin publishes: pose, colour image and its CameraInfo, one stamp each."""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import CameraInfo, Image

from fowm_core.contract import topics
from fowm_core.data import convert


def pose_msg(stamp: Time, xyz: np.ndarray, quat_xyzw: tuple[float, ...]) -> PoseStamped:
    msg = PoseStamped()
    msg.header.stamp, msg.header.frame_id = stamp, topics.BASE_FRAME
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in xyz)
    o = msg.pose.orientation
    o.x, o.y, o.z, o.w = (float(v) for v in quat_xyzw)
    return msg


def image_msg(stamp: Time, hwc: np.ndarray) -> Image:
    msg = Image(height=hwc.shape[0], width=hwc.shape[1], encoding="rgb8", is_bigendian=0,
                step=3 * hwc.shape[1], data=hwc.tobytes())
    msg.header.stamp, msg.header.frame_id = stamp, topics.CAMERA_FRAME
    return msg


def camera_info(stamp: Time, width: int, height: int, fovy_deg: float) -> CameraInfo:
    """The pinhole intrinsics of a MuJoCo camera (convert.camera_info_msg) as an rclpy message."""
    ref = convert.camera_info_msg(0, width, height, fovy_deg)
    msg = CameraInfo(height=height, width=width, distortion_model=ref.distortion_model,
                     d=[float(v) for v in ref.d], k=[float(v) for v in ref.k],
                     r=[float(v) for v in ref.r], p=[float(v) for v in ref.p])
    msg.header.stamp, msg.header.frame_id = stamp, topics.CAMERA_FRAME
    return msg
