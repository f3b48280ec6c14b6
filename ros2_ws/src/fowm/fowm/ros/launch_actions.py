"""Shared by both launch files: site-override YAML, rviz2 when installed, the learning loop.

Imported only by launch/*.launch.py (it needs ROS's ``launch``/``launch_ros``, which the PyPI
install has not; ``fowm run`` is the launch-free way there). Arguments, declared by ``arguments()``:

- ``site_config:=FILE`` layers FILE over the package YAML (``config:=`` replaces the package YAML);
- ``rviz:=true`` starts rviz2 if it is installed, else says so and starts the rest;
- ``learn:=true bag_dir:=D dataset:=X`` adds the recorder (one bag per episode into D) and the
  learner in its own process at nice 10 with one thread, as ``fowm run --bag-dir`` does (its
  Python work would otherwise take the GIL and cores from the planner's control thread);
- ``key_file:=K trusted_dir:=T``: the lab key and the only directory weights may come from
  (docs/trust.md). With learn:=true they default, as in ``fowm run``, to D/.learner/lab.key
  (created 0600 if missing) and D/.learner/checkpoints;
- ``tracker:=true extrinsics:=FILE`` adds fowm_tracker (ArUco object/goal poses, docs/perception.md)
  with the camera extrinsics `fowm calibrate` wrote.
- ``role:=robot|learner`` (docs/two_hosts.md), as ``fowm run --role``: ``robot`` adds the recorder
  (bags into bag_dir, kept locally) and fowm_robot_link (ships them, stores received checkpoints
  in trusted_dir, default bag_dir/.weights); ``learner`` starts only fowm_learner_link (bags
  arrive in bag_dir) and the learner, which sends its checkpoints' bytes. Both need key_file.

Every node process gets ``FOWM_PARENT_PID`` (fowm.ros.shutdown): if launch dies without stopping
them, they stop themselves.
"""

from __future__ import annotations

import os
from typing import Any

from launch.actions import (
    DeclareLaunchArgument,
    LogInfo,
    SetEnvironmentVariable,
    UnsetEnvironmentVariable,
)
from launch.launch_context import LaunchContext
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from fowm.ros import transports
from fowm.ros.lab_key import trust_overrides
from fowm.ros.shutdown import PARENT_ENV

LEARNER_NICE = 10


def arguments() -> list[Any]:
    """The launch arguments both launch files take, and the environment every node gets."""
    return [
        DeclareLaunchArgument(
            "site_config", default_value="",
            description="extra parameter YAML layered over config (site values win)"),
        DeclareLaunchArgument(
            "rviz", default_value="false",
            description="true: also start rviz2 with config/fowm.rviz (skipped if not installed)"),
        DeclareLaunchArgument(
            "learn", default_value="false",
            description="true: record one bag per episode into bag_dir and finetune on them live"),
        DeclareLaunchArgument("bag_dir", default_value="",
                              description="learn:=true: directory for the episode bags"),
        DeclareLaunchArgument(
            "dataset", default_value="",
            description="learn:=true: the offline dataset the checkpoint was pretrained on"),
        DeclareLaunchArgument(
            "key_file", default_value="",
            description="lab key (`fowm keygen PATH`) the learner signs checkpoints with; the "
                        "planner swaps only signed ones (docs/trust.md); learn:=true: "
                        "default bag_dir/.learner/lab.key"),
        DeclareLaunchArgument(
            "role", default_value="all",
            description="all: everything on this host; robot / learner: this host's half of a "
                        "robot PC + learner workstation pair with no shared disk "
                        "(docs/two_hosts.md)"),
        DeclareLaunchArgument(
            "trusted_dir", default_value="",
            description="the only directory weights are taken from; empty without learn:=true: "
                        "the planner never swaps weights"),
        DeclareLaunchArgument(
            "tracker", default_value="false",
            description="true: fowm_tracker publishes /fowm/object_pose and /fowm/goal_pose "
                        "from ArUco markers (docs/perception.md)"),
        DeclareLaunchArgument(
            "extrinsics", default_value="",
            description="tracker:=true: camera extrinsics YAML written by `fowm calibrate`"),
        # launch's own setting (ExecuteProcess reads it): seconds from SIGINT to SIGTERM. Its 5 s
        # default cut clean exits short: five processes closing Fast DDS's TCP (LARGE_DATA)
        # participants together took 4-10 s here, and were then killed mid-teardown.
        DeclareLaunchArgument(
            "sigterm_timeout", default_value="20",
            description="seconds a node has to exit after SIGINT before launch sends SIGTERM"),
        # 640×480 images between processes need Fast DDS's large-data transport
        # (docs/platform.md §1.7).
        SetEnvironmentVariable("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA"),
        SetEnvironmentVariable(PARENT_ENV, str(os.getpid())),
    ]


def arg(context: LaunchContext, name: str) -> str:
    return LaunchConfiguration(name).perform(context)


def is_true(context: LaunchContext, name: str) -> bool:
    value = arg(context, name).strip().lower()
    if value not in ("true", "false", "1", "0"):
        msg = f"launch argument {name}:={value!r} is invalid: expected true or false"
        raise ValueError(msg)
    return value in ("true", "1")


def parameter_files(context: LaunchContext) -> list[str]:
    """The package (or ``config:=``) YAML, then ``site_config:=`` over it."""
    files = [arg(context, "config")]
    site = arg(context, "site_config")
    if site:
        if not os.path.isfile(site):
            msg = f"site_config:={site} does not exist; pass a parameter YAML file"
            raise FileNotFoundError(msg)
        files.append(site)
    return files


def check_learning(context: LaunchContext) -> None:
    """Refuse learn:=true without its directories before any process starts."""
    if not is_true(context, "learn"):
        return
    if not arg(context, "bag_dir"):
        msg = "learn:=true needs bag_dir:=DIR (where the recorder writes one bag per episode)"
        raise ValueError(msg)
    dataset = arg(context, "dataset")
    if not dataset or not os.path.isdir(dataset):
        msg = (f"learn:=true needs dataset:=DIR, the offline dataset the checkpoint was pretrained "
               f"on (FOWM finetunes on 50/50 offline/online batches); got {dataset!r}")
        raise ValueError(msg)


def role(context: LaunchContext) -> str:
    """The ``role`` argument, checked with what that role needs (before any process starts)."""
    value = arg(context, "role").strip().lower()
    if value not in ("all", "robot", "learner"):
        msg = f"launch argument role:={value!r} is invalid: expected all, robot or learner"
        raise ValueError(msg)
    if value == "all":
        return value
    if is_true(context, "learn"):
        msg = (f"role:={value} with learn:=true: learn:=true runs recorder and learner on this "
               "host; with two hosts give role:=robot here and role:=learner on the workstation")
        raise ValueError(msg)
    key, bag_dir = arg(context, "key_file"), arg(context, "bag_dir")
    if not key or not os.path.isfile(key) or not bag_dir:
        msg = (f"role:={value} needs key_file:=K (the lab key both hosts share, `fowm keygen K` "
               f"then copy it 0600; got {key!r}) and bag_dir:=DIR (got {bag_dir!r})")
        raise ValueError(msg)
    dataset = arg(context, "dataset")
    if value == "learner" and not os.path.isdir(dataset):
        msg = f"role:=learner needs dataset:=DIR, the offline dataset; got {dataset!r}"
        raise ValueError(msg)
    return value


def two_host_env(context: LaunchContext) -> list[Any]:
    """role:=robot: every process of this host on shared memory only, this host only (the robot
    link gets its own variables back, robot_link_nodes); role:=learner: the default transports
    (UDP). A publish() to a host behind a cut link then never blocks a control node
    (fowm.ros.transports, docs/two_hosts.md)."""
    if role(context) == "all":
        return []
    values = (transports.CONTROL_ENV if role(context) == "robot"
              else transports.link_env(os.environ))
    actions: list[Any] = [SetEnvironmentVariable(k, v) for k, v in values.items()]
    if role(context) == "robot":
        actions.append(UnsetEnvironmentVariable(transports.PEERS))
    return actions


def robot_trusted_dir(context: LaunchContext) -> str:
    return arg(context, "trusted_dir") or os.path.join(arg(context, "bag_dir"), ".weights")


def _trust(context: LaunchContext) -> dict[str, dict[str, Any]]:
    """Per node, who signs and who verifies (fowm.ros.lab_key), from key_file/trusted_dir."""
    key, trusted = arg(context, "key_file"), arg(context, "trusted_dir")
    if role(context) == "robot":
        return {"fowm_planner": {"trust.key_file": key,
                                 "trust.trusted_dir": robot_trusted_dir(context)}}
    if is_true(context, "learn"):
        over = trust_overrides(os.path.join(arg(context, "bag_dir"), ".learner"), key or None)
    else:
        over = {"fowm_planner": {"trust.key_file": key, "trust.trusted_dir": ""}}
    if trusted:
        over["fowm_planner"]["trust.trusted_dir"] = trusted
    return over


def planner_trust(context: LaunchContext) -> dict[str, Any]:
    """The planner's trust.key_file / trust.trusted_dir."""
    return _trust(context)["fowm_planner"]


def learning_nodes(context: LaunchContext, params: list[Any]) -> list[Node]:
    """learn:=true: the recorder, and the learner niced in its own process."""
    if not is_true(context, "learn"):
        return []
    bag_dir = arg(context, "bag_dir")
    trust = _trust(context)
    return [
        Node(package="fowm", executable="recorder_node", name="fowm_recorder", output="screen",
             emulate_tty=True, parameters=[*params, {"bag_dir": bag_dir},
                                           trust["fowm_recorder"]]),
        Node(package="fowm", executable="learner_node", name="fowm_learner", output="screen",
             emulate_tty=True, prefix=f"nice -n {LEARNER_NICE}",
             additional_env={"OMP_NUM_THREADS": "1"},
             parameters=[*params, {"bag_dir": bag_dir, "checkpoint": arg(context, "checkpoint"),
                                   "dataset_dir": arg(context, "dataset"),
                                   "torch_threads": 1}, trust["fowm_learner"]]),
    ]


def robot_link_nodes(context: LaunchContext, params: list[Any]) -> list[Node]:
    """role:=robot: the recorder (bags kept on this host) and fowm_robot_link."""
    if role(context) != "robot":
        return []
    bag_dir, key = arg(context, "bag_dir"), arg(context, "key_file")
    return [
        Node(package="fowm", executable="recorder_node", name="fowm_recorder", output="screen",
             emulate_tty=True, parameters=[*params, {"bag_dir": bag_dir, "key_file": key}]),
        Node(package="fowm", executable="robot_link", name="fowm_robot_link", output="screen",
             emulate_tty=True, additional_env=transports.link_env(os.environ),
             parameters=[*params, {
                 "bag_dir": bag_dir, "store_dir": robot_trusted_dir(context), "key_file": key}]),
    ]


def learner_host_nodes(context: LaunchContext, params: list[Any]) -> list[Node]:
    """role:=learner: fowm_learner_link and the learner (niced, its checkpoints sent as bytes)."""
    bag_dir = arg(context, "bag_dir")
    return [
        Node(package="fowm", executable="learner_link", name="fowm_learner_link",
             output="screen", emulate_tty=True, parameters=[*params, {"bag_dir": bag_dir}]),
        Node(package="fowm", executable="learner_node", name="fowm_learner", output="screen",
             emulate_tty=True, prefix=f"nice -n {LEARNER_NICE}",
             additional_env={"OMP_NUM_THREADS": "1"},
             parameters=[*params, {"bag_dir": bag_dir, "checkpoint": arg(context, "checkpoint"),
                                   "dataset_dir": arg(context, "dataset"), "torch_threads": 1,
                                   "key_file": arg(context, "key_file"),
                                   "weights_link": True}]),
    ]


def rviz_nodes(context: LaunchContext, share: str) -> list[Any]:
    """rviz2 with the package's display config, when asked for and installed."""
    if not is_true(context, "rviz"):
        return []
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

    try:
        get_package_share_directory("rviz2")
    except PackageNotFoundError:
        return [LogInfo(msg="rviz:=true but rviz2 is not installed (it is C++, not on PyPI): "
                            "starting without it; install ros-<distro>-rviz2 to see the plan")]
    return [Node(package="rviz2", executable="rviz2", name="rviz2", output="screen",
                 arguments=["-d", os.path.join(share, "config", "fowm.rviz")])]


def tracker_nodes(context: LaunchContext, params: list[Any],
                  extra: dict[str, Any] | None = None) -> list[Node]:
    """tracker:=true: fowm_tracker with ``extrinsics:=FILE`` (refused before any process starts
    when the file is missing)."""
    if not is_true(context, "tracker"):
        return []
    extrinsics = arg(context, "extrinsics")
    if not extrinsics or not os.path.isfile(extrinsics):
        msg = (f"tracker:=true needs extrinsics:=FILE, the camera extrinsics `fowm calibrate "
               f"--out FILE` writes; got {extrinsics!r}")
        raise ValueError(msg)
    return [Node(package="fowm", executable="tracker_node", name="fowm_tracker", output="screen",
                 emulate_tty=True,
                 parameters=[*params, {"extrinsics_file": extrinsics, **(extra or {})}])]
