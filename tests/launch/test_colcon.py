"""`colcon build` of ros2_ws with the venv's colcon: ament_python, entry points, share/ files.

Builds a copy of the repository layout (ros2_ws plus the top-level launch/ and config/) in a temp
dir, as a ROS install or a Docker COPY of the repository would see it (docs/platform.md §2).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
COLCON = Path(sys.executable).parent / "colcon"
ENTRY_POINTS = ("xarm_node", "camera_node")
SHARE_PATTERNS = {"launch": ("*.launch.py",), "config": ("*.yaml", "*.rviz")}


def _copy_layout(dst: Path) -> None:
    shutil.copytree(REPO_ROOT / "ros2_ws", dst / "ros2_ws",
                    ignore=shutil.ignore_patterns("build", "install", "log", "__pycache__"))
    for folder in SHARE_PATTERNS:
        if (REPO_ROOT / folder).is_dir():
            shutil.copytree(REPO_ROOT / folder, dst / folder)
        else:
            (dst / folder).mkdir()
    # Probe files, so the install rule is checked even before the real launch/config land.
    (dst / "launch" / "zz_probe.launch.py").write_text("# probe\n")
    (dst / "config" / "zz_probe.yaml").write_text("probe: {ros__parameters: {}}\n")
    (dst / "config" / "zz_probe.rviz").write_text("Panels: []\n")


def _run(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=180,
                          check=False)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_colcon_builds_the_fowm_package(tmp_path: Path) -> None:
    _copy_layout(tmp_path)
    ws = tmp_path / "ros2_ws"
    listing = _run([str(COLCON), "list"], ws)
    # An invalid maintainer e-mail would silently make this "(python)" (docs/platform.md §2.3).
    assert "fowm" in listing and "(ros.ament_python)" in listing, listing
    _run([str(COLCON), "build"], ws)

    prefix = ws / "install" / "fowm"
    for name in ENTRY_POINTS:
        script = prefix / "lib" / "fowm" / name
        assert script.is_file() and os.access(script, os.X_OK), script
        assert script.read_text().startswith(f"#!{Path(sys.executable).parent}"), script
    share = prefix / "share" / "fowm"
    assert (share / "package.xml").is_file()
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "fowm").is_file()
    for folder, patterns in SHARE_PATTERNS.items():
        expected = {p.name for pattern in patterns for p in (tmp_path / folder).glob(pattern)}
        installed = {p.name for p in (share / folder).glob("*")}
        assert expected <= installed, (folder, expected - installed)
        assert f"zz_probe{patterns[0][1:]}" in installed

    # The installed package imports, with fowm_core from the venv.
    site = prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / \
        "site-packages"
    probe = ("import fowm.nodes.xarm_node, fowm.nodes.camera_node, fowm_core.runtime.arm; "
             "print(fowm.nodes.xarm_node.__file__)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60, check=False,
                         env={**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{REPO_ROOT}"})
    assert out.returncode == 0, out.stderr
    assert str(site) in out.stdout
