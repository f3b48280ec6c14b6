"""A node process ends cleanly on Ctrl-C (SIGINT twice, as `ros2 launch` sends it), on SIGTERM,
and when the launcher that started it dies (fowm.ros.shutdown)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

# The episode manager in real mode: no twin, a worker thread to join on exit; without a checkpoint
# the task is given (fowm.ros.checkpoint_task).
NODE = [sys.executable, "-c", "from fowm.nodes.episode_manager import main; main()",
        "--ros-args", "-p", "mode:=real", "-p", "task:=reach"]


def _env() -> dict[str, str]:
    return {**os.environ, "ROS_DOMAIN_ID": str(101 + (os.getpid() + 7) % 100),
            "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "PYTHONUNBUFFERED": "1"}


def _wait_for(path: Path, text: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in path.read_text():
        assert time.monotonic() < deadline, path.read_text()
        time.sleep(0.1)


@pytest.mark.parametrize("signals", [(signal.SIGINT, signal.SIGINT), (signal.SIGTERM,)],
                         ids=["ctrl-c-twice", "sigterm"])
def test_signals_end_the_node_with_exit_code_0_and_no_traceback(tmp_path: Path, signals) -> None:
    log = tmp_path / "node.log"
    with log.open("w") as out:
        proc = subprocess.Popen(NODE, env=_env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for(log, "confirm_reset")                    # running: waiting for the operator
        for sig in signals:
            proc.send_signal(sig)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        proc.kill()
    assert "Traceback" not in log.read_text() and "KeyboardInterrupt" not in log.read_text()


# The first SIGINT stops the process; launch's own SIGINT may land while the interpreter tears
# down, after Python has put its handlers back to the default action.
LATE_SECOND_SIGINT = """
import os, signal, sys, time
from fowm.ros.shutdown import stop_on_signals

class SignalAtTeardown:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)

with stop_on_signals() as stop:
    os.kill(os.getpid(), signal.SIGINT)
    assert stop.wait(5)
at_teardown = SignalAtTeardown()
sys.exit(0)
"""


def test_a_second_sigint_during_interpreter_teardown_does_not_kill_the_process() -> None:
    done = subprocess.run([sys.executable, "-c", LATE_SECOND_SIGINT], env=_env(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (done.returncode, done.stderr)      # not -2: killed by SIGINT


def test_node_stops_when_its_launcher_dies(tmp_path: Path) -> None:
    log = tmp_path / "node.log"
    log.touch()
    # A stand-in launcher: a shell that starts the node with FOWM_PARENT_PID set to itself.
    launcher = subprocess.Popen(
        ["bash", "-c", 'FOWM_PARENT_PID=$$ "$@" > "$0" 2>&1 & wait', str(log), *NODE],
        env=_env())
    try:
        _wait_for(log, "confirm_reset")
        node = psutil.Process(launcher.pid).children()[0]
        launcher.kill()                                    # SIGKILL: it cannot stop its child
        launcher.wait()
        node.wait(30)             # orphaned (not our child): its exit code is not ours to read
    finally:
        for child in psutil.Process().children(recursive=True):
            child.kill()
    assert "Traceback" not in log.read_text()


def test_a_node_that_refuses_to_start_exits_1_with_its_message_alone() -> None:
    # The planner without a checkpoint: the ConfigError's message (value, expectation, fix) and
    # exit code 1, not a traceback around it (fowm.ros.spin.run_nodes).
    proc = subprocess.run(
        [sys.executable, "-c", "from fowm.nodes.planner_node import main; main()"],
        env=_env(), capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "ConfigError: parameter checkpoint is empty" in out
    assert "Traceback" not in out
