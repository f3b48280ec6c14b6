"""FOWM on the real robot: RealSense camera, xArm driver, planner, episode manager (+ learning).

    ros2 launch fowm real_robot.launch.py robot_ip:=192.168.1.185 \
        checkpoint:=/path/to/lift.safetensors [learn:=true bag_dir:=D dataset:=X]

The episode manager runs in "real" mode: reset the scene, then
`ros2 service call /fowm_episode_manager/confirm_reset std_srvs/srv/Trigger`; label each episode
with `ros2 service call /fowm_episode_manager/label_success std_srvs/srv/SetBool "{data: true}"`.
``learn:=true`` records one bag per episode into bag_dir and finetunes on them (recorder + learner,
fowm.ros.launch_actions); ``site_config:=FILE`` layers a YAML over config/real_robot.yaml;
``rviz:=true`` adds rviz2 when installed; ``tracker:=true extrinsics:=FILE`` adds the ArUco
tracker (its markers: a fowm_tracker section in site_config, docs/perception.md). The arm stays
disarmed until
`ros2 service call /fowm_xarm/rearm std_srvs/srv/Trigger`.
"""

from __future__ import annotations

from fowm.ros import launch_actions as common
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.launch_context import LaunchContext
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription


def _nodes(context: LaunchContext) -> list:
    common.check_learning(context)          # before any process starts
    params = common.parameter_files(context)
    if common.role(context) == "learner":   # the workstation of a two-host pair: no robot here
        return [*common.two_host_env(context), *common.learner_host_nodes(context, params)]
    robot_ip = LaunchConfiguration("robot_ip").perform(context)
    checkpoint = LaunchConfiguration("checkpoint").perform(context)
    # The planner's weights and, for the episode manager, the task (fowm.ros.checkpoint_task).
    ckpt = {"checkpoint": checkpoint}
    share = FindPackageShare("fowm").perform(context)
    return [
        *common.two_host_env(context),              # first: every process below inherits it
        *common.learning_nodes(context, params),    # first: the recorder hears every event
        *common.robot_link_nodes(context, params),  # role:=robot: recorder + link to the learner
        Node(package="fowm", executable="camera_node", name="fowm_camera", output="screen",
             emulate_tty=True, parameters=params),
        Node(package="fowm", executable="xarm_node", name="fowm_xarm", output="screen",
             emulate_tty=True, parameters=[*params, {"robot_ip": robot_ip}]),
        Node(package="fowm", executable="planner_node", name="fowm_planner", output="screen",
             emulate_tty=True, parameters=[*params, ckpt, common.planner_trust(context)]),
        Node(package="fowm", executable="episode_manager", name="fowm_episode_manager",
             output="screen", emulate_tty=True, parameters=[*params, ckpt]),
        *common.tracker_nodes(context, params),
        *common.rviz_nodes(context, share),
    ]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument("robot_ip", description="IP address of the xArm controller"),
        DeclareLaunchArgument(
            "checkpoint",
            description="planner checkpoint (.safetensors, fowm_core.learning.checkpoints)"),
        DeclareLaunchArgument(
            "config", default_value=PathJoinSubstitution(
                [FindPackageShare("fowm"), "config", "real_robot.yaml"]),
            description="parameter YAML for camera, arm, planner and episode manager (replaces "
                        "the package's; see site_config to layer over it)"),
        *common.arguments(),
        OpaqueFunction(function=_nodes),
    ])
