"""FOWM on the real robot: RealSense camera, xArm driver, planner, episode manager (+ rviz2).

    ros2 launch fowm real_robot.launch.py robot_ip:=192.168.1.185 \
        checkpoint:=/path/to/lift.safetensors

The episode manager runs in "real" mode: reset the scene, then
`ros2 service call /fowm_episode_manager/confirm_reset std_srvs/srv/Trigger`; label each episode
with `ros2 service call /fowm_episode_manager/label_success std_srvs/srv/SetBool "{data: true}"`.
Record with `ros2 bag record` (docs/design.md). The arm stays disarmed until its driver is armed.
"""

from __future__ import annotations

from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    config = LaunchConfiguration("config")
    # The planner's weights and, for the episode manager, the task (fowm.ros.checkpoint_task).
    checkpoint = {"checkpoint": LaunchConfiguration("checkpoint")}
    # Which weights may act (docs/trust.md); str-typed so an empty value stays a string.
    trust = {"trust.key_file": ParameterValue(LaunchConfiguration("key_file"), value_type=str),
             "trust.trusted_dir": ParameterValue(LaunchConfiguration("trusted_dir"),
                                                 value_type=str)}
    return LaunchDescription([
        DeclareLaunchArgument("robot_ip", description="IP address of the xArm controller"),
        DeclareLaunchArgument(
            "checkpoint", description="planner checkpoint (.safetensors, fowm_core.learning.checkpoints)"),
        DeclareLaunchArgument(
            "config", default_value=PathJoinSubstitution(
                [FindPackageShare("fowm"), "config", "real_robot.yaml"]),
            description="parameter YAML for camera, arm, planner and episode manager"),
        DeclareLaunchArgument("rviz", default_value="true", description="start rviz2"),
        DeclareLaunchArgument(
            "key_file", default_value="",
            description="lab key (`fowm keygen PATH`) that the learner signs checkpoints with; "
                        "the planner swaps only signed ones (docs/trust.md)"),
        DeclareLaunchArgument(
            "trusted_dir", default_value="",
            description="the learner's <work_dir>/checkpoints: the only place weights are taken "
                        "from; empty: the planner never swaps weights"),
        SetEnvironmentVariable("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA"),
        Node(package="fowm", executable="camera_node", name="fowm_camera", output="screen",
             emulate_tty=True, parameters=[config]),
        Node(package="fowm", executable="xarm_node", name="fowm_xarm", output="screen",
             emulate_tty=True,
             parameters=[config, {"robot_ip": LaunchConfiguration("robot_ip")}]),
        Node(package="fowm", executable="planner_node", name="fowm_planner", output="screen",
             emulate_tty=True,
             parameters=[config, checkpoint, trust]),
        Node(package="fowm", executable="episode_manager", name="fowm_episode_manager",
             output="screen", emulate_tty=True, parameters=[config, checkpoint]),
        Node(package="rviz2", executable="rviz2", name="rviz2", output="screen",
             arguments=["-d", PathJoinSubstitution(
                 [FindPackageShare("fowm"), "config", "fowm.rviz"])],
             condition=IfCondition(LaunchConfiguration("rviz"))),
    ])
