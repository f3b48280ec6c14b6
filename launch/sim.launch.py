"""The sim stack on a ROS 2 install: MuJoCo twin + planner + episode manager (+ learning, rviz2).

    ros2 launch fowm sim.launch.py checkpoint:=/path/to/lift.safetensors [lockstep:=true]
    ros2 launch fowm sim.launch.py checkpoint:=C learn:=true bag_dir:=D dataset:=X

``site_config:=FILE`` layers a YAML over config/sim.yaml; ``rviz:=true`` adds rviz2 when installed;
``learn:=true`` adds the recorder and the learner (fowm.ros.launch_actions). ``tracker:=true
extrinsics:=FILE`` runs the twin with ArUco markers, publishing only the tracker camera (640×480)
and the arm (no privileged object/goal poses), and fowm_tracker supplies the poses
(docs/perception.md; FILE from `fowm calibrate`). `fowm run --config
config/sim.yaml` starts the same nodes in one process where ROS's launch is not installed.
"""

from __future__ import annotations

from fowm.ros import launch_actions as common
from fowm.ros import tracker_mode
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
    lockstep = common.is_true(context, "lockstep")
    checkpoint = LaunchConfiguration("checkpoint").perform(context)
    # One checkpoint for all three: the planner's weights, the others' task and obs mode.
    ckpt = {"checkpoint": checkpoint}
    follower = {"lockstep": lockstep, "use_sim_time": lockstep}   # the twin owns /clock
    share = FindPackageShare("fowm").perform(context)
    tracker = common.tracker_nodes(context, params, ckpt)
    # tracker:=true: the twin as a camera and an arm only; the tracker supplies object and goal.
    twin = {"lockstep": lockstep, **(tracker_mode.SIM_PARAMS if tracker else {})}
    return [
        *common.two_host_env(context),              # first: every process below inherits it
        *common.learning_nodes(context, params),    # first: the recorder hears every event
        *common.robot_link_nodes(context, params),  # role:=robot: recorder + link to the learner
        Node(package="fowm", executable="sim_node", name="fowm_sim", output="screen",
             emulate_tty=True, parameters=[*params, twin, ckpt]),
        Node(package="fowm", executable="planner_node", name="fowm_planner", output="screen",
             emulate_tty=True, parameters=[*params, follower, ckpt, common.planner_trust(context)]),
        Node(package="fowm", executable="episode_manager", name="fowm_episode_manager",
             output="screen", emulate_tty=True, parameters=[*params, follower, ckpt]),
        *tracker,
        *common.rviz_nodes(context, share),
    ]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument(
            "checkpoint",
            description="planner checkpoint (.safetensors, fowm_core.learning.checkpoints)"),
        DeclareLaunchArgument(
            "config", default_value=PathJoinSubstitution(
                [FindPackageShare("fowm"), "config", "sim.yaml"]),
            description="parameter YAML for the twin, planner and episode manager (replaces "
                        "the package's; see site_config to layer over it)"),
        DeclareLaunchArgument(
            "lockstep", default_value="false",
            description="true: the twin publishes /clock and steps only after each answer"),
        *common.arguments(),
        OpaqueFunction(function=_nodes),
    ])
