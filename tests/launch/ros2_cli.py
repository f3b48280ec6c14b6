"""Running ROS 2's real `ros2 launch` / `ros2 topic|node|param` against a colcon-built fowm.

The tools come from the upstream wheels (`make ros2-tools`, ROS2_TOOLS in the Makefile) or a distro;
missing tools fail the tests with the fix, never skip them. Every launch runs in its own session
(process group) on a domain of its own, discovery limited to localhost, and is stopped like a
terminal Ctrl-C: SIGINT to the whole group.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def ros2_executable() -> str:
    exe = VENV_BIN / "ros2"
    found = str(exe) if exe.is_file() else shutil.which("ros2")
    assert found, ("ROS 2's launch/CLI tools are not installed: run `make ros2-tools "
                   "ROS2_TOOLS=/path/to/shared/ros2-tools` (CI: .ci/run does), or source a ROS 2 "
                   "distro's setup.bash")
    return found


def build_workspace(dst: Path) -> Path:
    """colcon build of a copy of ros2_ws (+ launch/, config/); returns the install folder."""
    shutil.copytree(REPO / "ros2_ws", dst / "ros2_ws",
                    ignore=shutil.ignore_patterns("build", "install", "log", "__pycache__"))
    for folder in ("launch", "config"):
        shutil.copytree(REPO / folder, dst / folder)
    ws = dst / "ros2_ws"
    proc = subprocess.run([str(VENV_BIN / "colcon"), "build"], cwd=ws, capture_output=True,
                          text=True, timeout=300, check=False,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert proc.returncode == 0, f"colcon build failed:\n{proc.stdout}\n{proc.stderr}"
    return ws / "install"


def sourced_env(install: Path, domain_id: int) -> dict[str, str]:
    """The environment after `source install/setup.bash` (AMENT_PREFIX_PATH=venv as a distro's)."""
    base = {**os.environ, "AMENT_PREFIX_PATH": str(VENV_BIN.parent),
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = subprocess.run(["bash", "-c", f"source {install}/setup.bash && env -0"], env=base,
                         capture_output=True, check=True, timeout=60).stdout
    env = dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)
    env.update(ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"), PYTHONUNBUFFERED="1")
    env.pop(PARENT_ENV, None)
    return env


PARENT_ENV = "FOWM_PARENT_PID"


def _default_sigint() -> None:
    # A background job of a non-interactive shell (CI) inherits SIGINT ignored; launch needs it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Launch:
    """`ros2 launch fowm FILE ARGS` in its own session, output to ``log_path``."""

    def __init__(self, env: dict[str, str], log_path: Path, *args: str) -> None:
        self.log_path = log_path
        self._log = log_path.open("w")
        self.proc = subprocess.Popen([ros2_executable(), "launch", *args], env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True, preexec_fn=_default_sigint)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def pids(self) -> dict[str, int]:
        """{process name: pid} from launch's "process started with pid" lines."""
        found = re.findall(r"\[INFO\] \[([\w-]+)\]: process started with pid \[(\d+)\]",
                           self.log())
        return {name: int(pid) for name, pid in found}

    def sigint(self, timeout_s: float = 60.0) -> int:
        """Ctrl-C in a terminal: SIGINT to the whole process group; returns launch's exit code."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
        try:
            return self.proc.wait(timeout_s)
        finally:
            self.kill()

    def kill(self) -> None:
        """Last resort for a failed test: nothing may outlive it."""
        for pid in [self.proc.pid, *self.pids().values()]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def ros2(env: dict[str, str], *args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess:
    """One `ros2 ...` command (no daemon: it would outlive the test)."""
    return subprocess.run([ros2_executable(), *args], env=env, capture_output=True, text=True,
                          timeout=timeout_s, check=False)


def param(env: dict[str, str], verb: str, *args: str) -> str:
    """`ros2 param VERB --no-daemon ARGS` -> stdout + stderr. Without a daemon each call discovers
    the graph anew, and on a loaded machine "Node not found" can come before discovery: retried."""
    for _ in range(5):
        out = ros2(env, "param", verb, "--no-daemon", "--spin-time", "3", *args)
        if "Node not found" not in out.stderr:
            break
    return out.stdout + out.stderr


def for_seconds(env: dict[str, str], seconds: float, *args: str) -> str:
    """stdout of a `ros2` command that runs until stopped (hz, echo), stopped with SIGINT."""
    proc = subprocess.run(["timeout", "-s", "INT", str(seconds), ros2_executable(), *args],
                          env=env, capture_output=True, text=True, timeout=seconds + 60,
                          check=False)
    return proc.stdout


def until(fn: Callable[[], Any], timeout_s: float, every_s: float = 1.0) -> Any:
    """Poll ``fn`` until it returns something truthy; the last value otherwise."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every_s)


def node_names(env: dict[str, str]) -> set[str]:
    out = ros2(env, "node", "list", "--no-daemon", "--spin-time", "3").stdout
    return {line.strip() for line in out.splitlines() if line.strip()}


def diagnostics(env: dict[str, str], seconds: float = 5.0) -> dict[str, tuple[int, str, str]]:
    """{status name: (level, message, values repr)} of /diagnostics heard for ``seconds``."""
    out = for_seconds(env, seconds, "topic", "echo", "--no-daemon", "/diagnostics",
                      "diagnostic_msgs/msg/DiagnosticArray", "--field", "status")
    found = {}
    for level, name, message, values in re.findall(
            r"DiagnosticStatus\(level=b'(\\x0[0-3])', name='([^']*)', "
            r"message=(?:'|\")(.*?)(?:'|\"), hardware_id='[^']*', values=\[(.*?)\]\)", out):
        found[name] = (int(level[2:], 16), message, values)
    return found


def action_rate(env: dict[str, str], seconds: float = 10.0) -> float:
    out = for_seconds(env, seconds, "topic", "hz", "/fowm/action")   # hz never uses a daemon
    rates = re.findall(r"average rate: ([\d.]+)", out)
    assert rates, f"`ros2 topic hz /fowm/action` heard nothing:\n{out}"
    return float(rates[-1])


def clean_shutdown_problems(launch: Launch, rc: int) -> list[str]:
    """What a Ctrl-C left wrong: exit code, tracebacks, kills, processes still running."""
    log = launch.log()
    problems = [] if rc == 0 else [f"ros2 launch exited {rc}"]
    for needle in ("Traceback", "KeyboardInterrupt", "exit code", "escalating to", "SIGKILL"):
        if needle in log:
            problems.append(f"log says {needle!r}")
    pids = launch.pids()
    if not pids:
        problems.append("no process started")
    problems += [f"{name} (pid {pid}) still running" for name, pid in pids.items() if alive(pid)]
    finished = len(re.findall(r"process has finished cleanly", log))
    if finished != len(pids):
        problems.append(f"{finished} of {len(pids)} processes finished cleanly")
    return problems
