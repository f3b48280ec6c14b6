"""ament_python build of the `fowm` ROS 2 package (docs/platform.md §2.1).

Launch files and parameter YAML live at the repository's top level (launch/, config/), where
`fowm` CLI users find them without ROS; they are installed into share/fowm/{launch,config} from
there, found relative to this file. That works for `colcon build` in ros2_ws and for a Docker COPY
of the whole repository; a copy of ros2_ws alone installs the package without them.
"""

from __future__ import annotations

import os
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "fowm"
HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[2]          # ros2_ws/src/fowm -> repository root

# One console script per node: `ros2 run fowm <name>` -> fowm.<module>:main.
NODES = {
    "xarm_node": "fowm.nodes.xarm_node",
    "camera_node": "fowm.nodes.camera_node",
    "sim_node": "fowm.nodes.sim_node",
    "planner_node": "fowm.nodes.planner_node",
    "episode_manager": "fowm.nodes.episode_manager",
    "stack": "fowm.bringup",
    "recorder_node": "fowm.nodes.recorder_node",
    "learner_node": "fowm.nodes.learner_node",
    "tracker_node": "fowm.nodes.tracker_node",
    "calibration_node": "fowm.nodes.calibration_node",
    "robot_link": "fowm.nodes.robot_link",
    "learner_link": "fowm.nodes.learner_link",
}
# Verbs of the `fowm` command (fowm_core.jobs.cli finds them by this entry point group, as ros2cli
# finds its verbs): each is called with the arguments after the verb and returns an exit code.
COMMANDS = {
    "run": "fowm.roles:main",
    "demo": "fowm.demo:main",
}


def _share(folder: str, *patterns: str) -> tuple[str, list[str]]:
    """(install dir, sources) for top-level files; setuptools wants paths relative to setup.py."""
    files: list[str] = []
    for pattern in patterns:
        files += sorted(os.path.relpath(f, HERE) for f in glob(str(REPO_ROOT / folder / pattern)))
    return f"share/{PACKAGE}/{folder}", files


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        _share("launch", "*.launch.py"),
        _share("config", "*.yaml", "*.rviz"),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="fowm maintainers",
    maintainer_email="fowm@example.com",
    description="FOWM on ROS 2: thin nodes over fowm_core (drivers, twin, planner, learner)",
    license="Apache-2.0",
    extras_require={"test": ["pytest"]},
    entry_points={
        "console_scripts": [f"{name} = {module}:main" for name, module in NODES.items()],
        "fowm.commands": [f"{name} = {target}" for name, target in COMMANDS.items()],
    },
)
