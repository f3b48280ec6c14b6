"""The topic contract (docs/design.md), as data: names and stock message types.

Shared by the ROS nodes, the recorder and the bag codec, so live topics and logged bags agree.
Names follow realsense-ros (/camera/camera/...) and xarm_ros2 (/xarm/...).
"""

from __future__ import annotations

COLOR_IMAGE = "/camera/camera/color/image_raw"        # sensor_msgs/msg/Image, rgb8
COLOR_INFO = "/camera/camera/color/camera_info"       # sensor_msgs/msg/CameraInfo
JOINT_STATES = "/xarm/joint_states"                   # sensor_msgs/msg/JointState
EE_POSE = "/xarm/ee_pose"                             # geometry_msgs/msg/PoseStamped, link_base, m
OBJECT_POSE = "/fowm/object_pose"                     # geometry_msgs/msg/PoseStamped (tracker)
GOAL_POSE = "/fowm/goal_pose"                         # geometry_msgs/msg/PoseStamped (task target)
ACTION = "/fowm/action"                               # sensor_msgs/msg/JointState, normalized
REWARD = "/fowm/reward"                               # std_msgs/msg/Float32 (monitoring only)
EPISODE = "/fowm/episode"                             # std_msgs/msg/String, JSON episode events
WEIGHTS = "/fowm/weights"                             # std_msgs/msg/String, JSON, transient-local
PLAN_MARKERS = "/fowm/plan_markers"                   # visualization_msgs/msg/MarkerArray
DIAGNOSTICS = "/diagnostics"                          # diagnostic_msgs/msg/DiagnosticArray

MSG_TYPES: dict[str, str] = {
    COLOR_IMAGE: "sensor_msgs/msg/Image",
    COLOR_INFO: "sensor_msgs/msg/CameraInfo",
    JOINT_STATES: "sensor_msgs/msg/JointState",
    EE_POSE: "geometry_msgs/msg/PoseStamped",
    OBJECT_POSE: "geometry_msgs/msg/PoseStamped",
    GOAL_POSE: "geometry_msgs/msg/PoseStamped",
    ACTION: "sensor_msgs/msg/JointState",
    REWARD: "std_msgs/msg/Float32",
    EPISODE: "std_msgs/msg/String",
    WEIGHTS: "std_msgs/msg/String",
    PLAN_MARKERS: "visualization_msgs/msg/MarkerArray",
    DIAGNOSTICS: "diagnostic_msgs/msg/DiagnosticArray",
}

# What a bag must hold to rebuild transitions; everything else is for monitoring.
RECORDED = (COLOR_IMAGE, COLOR_INFO, JOINT_STATES, EE_POSE, OBJECT_POSE, GOAL_POSE, ACTION,
            REWARD, EPISODE, WEIGHTS)

ACTION_NAMES = ("ee_dx", "ee_dy", "ee_dz", "gripper")
GRIPPER_JOINT = "drive_joint"      # xarm_ros2's gripper joint name in joint_states
BASE_FRAME = "link_base"
CAMERA_FRAME = "camera_color_optical_frame"

# Between the robot PC and the learner's host when they share no disk (docs/two_hosts.md); only
# the two-host roles publish them, so they are not in MSG_TYPES (what every stack publishes).
LINK = "/fowm/link"                                   # std_msgs/msg/String, JSON heartbeat, 1 Hz
WEIGHTS_BLOB = "/fowm/weights_blob"                   # std_msgs/msg/UInt8MultiArray, frames
EPISODE_BLOB = "/fowm/episode_blob"                   # std_msgs/msg/UInt8MultiArray, frames
EPISODE_ACK = "/fowm/episode_ack"                     # std_msgs/msg/String, JSON {name, sha256}
TRANSFER_PROGRESS = "/fowm/transfer_progress"         # std_msgs/msg/String, JSON {id, frames}
LINK_TYPES: dict[str, str] = {
    LINK: "std_msgs/msg/String",
    WEIGHTS_BLOB: "std_msgs/msg/UInt8MultiArray",
    EPISODE_BLOB: "std_msgs/msg/UInt8MultiArray",
    EPISODE_ACK: "std_msgs/msg/String",
    TRANSFER_PROGRESS: "std_msgs/msg/String",
}
