"""The sim stack on a ROS 2 install: MuJoCo twin + planner + episode manager (+ rviz2).

    ros2 launch fowm sim.launch.py checkpoint:=/path/to/lift.safetensors [lockstep:=true]

`fowm run --config config/sim.yaml` starts the same nodes in one process where ROS's launch is
not installed (PyPI wheels).
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
    lockstep = LaunchConfiguration("lockstep")
    # One checkpoint for all three: the planner's weights, the others' task and obs mode.
    checkpoint = {"checkpoint": LaunchConfiguration("checkpoint")}
    # Which weights may act (docs/trust.md); str-typed so an empty value stays a string.
    trust = {"trust.key_file": ParameterValue(LaunchConfiguration("key_file"), value_type=str),
             "trust.trusted_dir": ParameterValue(LaunchConfiguration("trusted_dir"),
                                                 value_type=str)}
    common = {"lockstep": lockstep}
    follower = {"lockstep": lockstep, "use_sim_time": lockstep}   # the twin owns /clock
    return LaunchDescription([
        DeclareLaunchArgument(
            "checkpoint", description="planner checkpoint (.safetensors, fowm_core.learning.checkpoints)"),
        DeclareLaunchArgument(
            "config", default_value=PathJoinSubstitution(
                [FindPackageShare("fowm"), "config", "sim.yaml"]),
            description="parameter YAML for the twin, planner and episode manager"),
        DeclareLaunchArgument(
            "lockstep", default_value="false",
            description="true: the twin publishes /clock and steps only after each answer"),
        DeclareLaunchArgument("rviz", default_value="true", description="start rviz2"),
        DeclareLaunchArgument(
            "key_file", default_value="",
            description="lab key (`fowm keygen PATH`) that the learner signs checkpoints with; "
                        "the planner swaps only signed ones (docs/trust.md)"),
        DeclareLaunchArgument(
            "trusted_dir", default_value="",
            description="the learner's <work_dir>/checkpoints: the only place weights are taken "
                        "from; empty: the planner never swaps weights"),
        # 640×480 images between processes need Fast DDS's large-data transport
        # (docs/platform.md §1.7).
        SetEnvironmentVariable("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA"),
        Node(package="fowm", executable="sim_node", name="fowm_sim", output="screen",
             emulate_tty=True, parameters=[config, common, checkpoint]),
        Node(package="fowm", executable="planner_node", name="fowm_planner", output="screen",
             emulate_tty=True,
             parameters=[config, follower, checkpoint, trust]),
        Node(package="fowm", executable="episode_manager", name="fowm_episode_manager",
             output="screen", emulate_tty=True, parameters=[config, follower, checkpoint]),
        Node(package="rviz2", executable="rviz2", name="rviz2", output="screen",
             arguments=["-d", PathJoinSubstitution(
                 [FindPackageShare("fowm"), "config", "fowm.rviz"])],
             condition=IfCondition(LaunchConfiguration("rviz"))),
    ])
