"""Static checks of launch/*.launch.py and config/ (test_ros2_launch.py runs them for real).

Each launch file (with fowm.ros.launch_actions, which both use) is parsed with ``ast``: every fowm
executable it starts is a console script in setup.py, every config/rviz file it names exists and
is installed by setup.py's data_files globs, every launch argument is declared with a description.
Every parameter in config/*.yaml is one its node declares (a typo would otherwise be silently
ignored by rclpy) and every value is accepted by the node's own declaration (fowm.ros.params on
the node's dataclasses: type, range, ``__post_init__``), so no node dies at start on its YAML.
"""

from __future__ import annotations

import ast
import dataclasses
import fnmatch
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PKG = REPO / "ros2_ws" / "src" / "fowm"
LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.py"))
SHARED = PKG / "fowm" / "ros" / "launch_actions.py"
COMMON_ARGS = {"checkpoint", "config", "site_config", "rviz", "learn", "bag_dir", "dataset",
               "role", "key_file", "trusted_dir"}
REQUIRED_ARGS = {"sim.launch.py": COMMON_ARGS | {"lockstep"},
                 "real_robot.launch.py": COMMON_ARGS | {"robot_ip"}}


def _setup_py() -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """(console scripts {name: module}, installed share folders {folder: globs})."""
    tree = ast.parse((PKG / "setup.py").read_text())
    nodes: dict[str, str] = {}
    shares: dict[str, tuple[str, ...]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "NODES":
            nodes = ast.literal_eval(node.value)
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "_share":
            folder, *patterns = (ast.literal_eval(a) for a in node.args)
            shares[folder] = tuple(patterns)
    return nodes, shares


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "id", getattr(n.func, "attr", "")) == name]


def _kw(call: ast.Call, key: str) -> Any:
    for kw in call.keywords:
        if kw.arg == key:
            return kw.value
    return None


def _package_files(tree: ast.AST) -> list[tuple[str, str]]:
    """(folder, file) of every PathJoinSubstitution([FindPackageShare('fowm'), folder, file])."""
    out = []
    for call in _calls(tree, "PathJoinSubstitution"):
        parts = call.args[0].elts
        share = parts[0]
        if (isinstance(share, ast.Call) and getattr(share.func, "id", "") == "FindPackageShare"
                and ast.literal_eval(share.args[0]) == "fowm"):
            out.append(tuple(ast.literal_eval(p) for p in parts[1:]))
    return out


def test_there_are_both_launch_files() -> None:
    assert {p.name for p in LAUNCH_FILES} == set(REQUIRED_ARGS)


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_every_fowm_executable_is_a_console_script(path: Path) -> None:
    scripts, _ = _setup_py()
    tree = ast.parse(path.read_text() + SHARED.read_text())
    started = [c for c in _calls(tree, "Node")
               if _kw(c, "package") is not None and ast.literal_eval(_kw(c, "package")) == "fowm"]
    assert started
    for call in started:
        exe = ast.literal_eval(_kw(call, "executable"))
        assert exe in scripts, f"{path.name} starts {exe!r}, not a console script in setup.py"
        module = scripts[exe].split(":")[0]
        assert (PKG / (module.replace(".", "/") + ".py")).is_file()


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_every_referenced_file_exists_and_is_installed(path: Path) -> None:
    _, shares = _setup_py()
    files = _package_files(ast.parse(path.read_text()))
    assert files
    for folder, name in files:
        assert (REPO / folder / name).is_file(), f"{path.name} names missing {folder}/{name}"
        assert any(fnmatch.fnmatch(name, g) for g in shares.get(folder, ())), \
            f"{folder}/{name} is not installed by setup.py's data_files"


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_arguments_are_declared_with_descriptions(path: Path) -> None:
    tree = ast.parse(path.read_text() + SHARED.read_text())
    declared = {}
    for call in _calls(tree, "DeclareLaunchArgument"):
        description = _kw(call, "description")
        declared[ast.literal_eval(call.args[0])] = description
        assert description is not None and ast.literal_eval(description).strip()
    assert REQUIRED_ARGS[path.name] <= set(declared)
    used = {ast.literal_eval(c.args[0]) for c in _calls(tree, "LaunchConfiguration")
            if isinstance(c.args[0], ast.Constant)}
    used |= {ast.literal_eval(c.args[1]) for name in ("arg", "is_true")
             for c in _calls(tree, name) if len(c.args) > 1 and isinstance(c.args[1], ast.Constant)}
    assert used <= set(declared), f"undeclared launch arguments {used - set(declared)}"


def test_rviz_is_off_by_default() -> None:
    # rviz2 is C++: not in a PyPI venv nor in our Docker image. On by default, launch failed.
    tree = ast.parse(SHARED.read_text())
    rviz = next(c for c in _calls(tree, "DeclareLaunchArgument")
                if ast.literal_eval(c.args[0]) == "rviz")
    assert ast.literal_eval(_kw(rviz, "default_value")) == "false"


def _node_dataclasses() -> dict[str, list[tuple[str, type]]]:
    """Node name → (prefix, dataclass) pairs it declares with fowm.ros.params."""
    from fowm.hardware.realsense import CameraConfig
    from fowm.nodes.episode_manager import EpisodeManagerParams
    from fowm.nodes.learner_link import LearnerLinkParams
    from fowm.nodes.learner_node import LearnerNodeParams
    from fowm.nodes.planner_node import PlannerNodeParams
    from fowm.nodes.recorder_node import RecorderParams
    from fowm.nodes.robot_link import RobotLinkParams
    from fowm.nodes.sim_node import SimNodeParams
    from fowm.nodes.tracker_node import TrackerParams
    from fowm.nodes.xarm_node import XArmNodeConfig

    from fowm_core.runtime.arm import ArmLimits

    return {"fowm_sim": [("", SimNodeParams)], "fowm_planner": [("", PlannerNodeParams)],
            "fowm_episode_manager": [("", EpisodeManagerParams)],
            "fowm_camera": [("", CameraConfig)],
            "fowm_xarm": [("", XArmNodeConfig), ("limits", ArmLimits)],
            "fowm_recorder": [("", RecorderParams)], "fowm_learner": [("", LearnerNodeParams)],
            "fowm_tracker": [("", TrackerParams)],
            "fowm_robot_link": [("", RobotLinkParams)],
            "fowm_learner_link": [("", LearnerLinkParams)]}


def _declared_parameters() -> dict[str, set[str]]:
    """Node name → parameter names its dataclasses declare (what fowm.ros.params turns into ROS)."""
    def names(cls: type, prefix: str = "") -> set[str]:
        out = set()
        for f in dataclasses.fields(cls):
            name = (f"{prefix}." if prefix else "") + f.name
            default = (f.default_factory() if f.default_factory is not dataclasses.MISSING
                       else f.default)
            # A nested dataclass field (e.g. the episode manager's rewards.*) is declared leaf by
            # leaf, as fowm.ros.params does.
            out |= names(type(default), name) if dataclasses.is_dataclass(default) else {name}
        return out

    return {node: set().union(*(names(cls, prefix) for prefix, cls in pairs))
            for node, pairs in _node_dataclasses().items()}


@pytest.mark.parametrize("name", ["sim.yaml", "real_robot.yaml"])
def test_config_parameters_are_declared_by_their_nodes(name: str) -> None:
    declared = _declared_parameters()
    data = yaml.safe_load((REPO / "config" / name).read_text())
    for node, section in data.items():
        params = set(_flatten(section["ros__parameters"]))
        if node == "/**":
            common = set.intersection(*(declared[n] for n in ("fowm_sim", "fowm_planner",
                                                                "fowm_episode_manager")))
            assert params <= common | {"use_sim_time"}, params - common
            continue
        assert node in declared, f"{name}: no fowm node is named {node!r}"
        unknown = params - declared[node]
        assert not unknown, f"{name}: {node} does not declare {unknown}"


@pytest.mark.parametrize("name", ["sim.yaml", "real_robot.yaml"])
def test_config_values_are_accepted_by_their_nodes(name: str) -> None:
    """Declare each node's parameters from the YAML exactly as the node does at start."""
    import rclpy
    from fowm.ros.params import declare_from_dataclass
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    data = yaml.safe_load((REPO / "config" / name).read_text())
    common = _flat_values(data.get("/**", {}).get("ros__parameters", {}))
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=0)
    try:
        for node_name, section in data.items():
            if node_name == "/**":
                continue
            values = {**common, **_flat_values(section["ros__parameters"])}
            values.pop("use_sim_time", None)
            node = Node(f"probe_{node_name}", context=context, start_parameter_services=False,
                        parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
            try:
                for prefix, cls in _node_dataclasses()[node_name]:
                    declare_from_dataclass(node, prefix, cls)     # ConfigError names the value
            finally:
                node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


def _flat_values(section: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in section.items():
        if isinstance(value, dict):
            out.update(_flat_values(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _flatten(section: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, value in section.items():
        if isinstance(value, dict):
            out += _flatten(value, f"{prefix}{key}.")
        else:
            out.append(prefix + key)
    return out


def test_rviz_config_shows_the_contract_with_the_right_qos() -> None:
    from fowm_core.contract import topics

    rviz = yaml.safe_load((REPO / "config" / "fowm.rviz").read_text())
    manager = rviz["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == topics.BASE_FRAME
    displays = {d["Topic"]["Value"]: d for d in manager["Displays"] if "Topic" in d}
    assert displays[topics.COLOR_IMAGE]["Class"] == "rviz_default_plugins/Image"
    assert displays[topics.PLAN_MARKERS]["Class"] == "rviz_default_plugins/MarkerArray"
    assert displays[topics.EE_POSE]["Class"] == "rviz_default_plugins/Pose"
    # Sensor streams are read best effort (REP-2003); the planner's markers are published reliable.
    for topic in (topics.COLOR_IMAGE, topics.EE_POSE):
        assert displays[topic]["Topic"]["Reliability Policy"] == "Best Effort"
    assert displays[topics.PLAN_MARKERS]["Topic"]["Reliability Policy"] == "Reliable"
