"""Supervision of the learner process: backoff with a cap, give-up, /diagnostics; the learner's
lock and health report; a learner process that fails exits non-zero so it is restarted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from fowm.nodes.learner_node import LearnerNode
from fowm.ros import qos
from fowm.ros.diagnostics import ERROR, OK, WARN
from fowm.ros.supervisor import Backoff, SupervisedProcess, SupervisorNode
from helpers.loop import collect, tiny_checkpoint
from rclpy.parameter import Parameter

from fowm_core.contract import topics
from fowm_core.errors import ConfigError


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _exits(code: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", f"raise SystemExit({code})"])
    proc.wait()
    return proc


def test_backoff_grows_to_its_cap() -> None:
    b = Backoff(initial_s=1.0, factor=2.0, cap_s=5.0)
    assert [b.delay(k) for k in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_a_dying_process_is_restarted_with_backoff_then_given_up() -> None:
    clock = FakeClock()
    sup = SupervisedProcess("child", lambda: _exits(3),
                            Backoff(initial_s=1.0, cap_s=2.0, max_failures=4), clock)
    sup.start()
    states = []
    for _ in range(20):
        states.append((clock.t, sup.poll(), sup.status()[1]))
        clock.t += 0.5
    assert sup.exit_codes[:4] == [3, 3, 3, 3] and sup.state == "given_up"
    assert sup.restarts == 3                     # 1 s, then 2 s, then 2 s (the cap)
    level, message, values = sup.status()
    assert level == ERROR and "given up after 4 failures" in message
    assert values["last_exit_code"] == 3
    assert any("restarting in 1 s" in m for _, _, m in states)


def test_a_process_that_stayed_up_resets_the_failure_count() -> None:
    clock = FakeClock()
    procs: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        procs.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]))
        return procs[-1]

    sup = SupervisedProcess("child", start, Backoff(stable_s=10.0, max_failures=2), clock)
    sup.start()
    try:
        for _ in range(3):                       # each run was long: never two in a row
            clock.t += 11.0
            procs[-1].kill()
            procs[-1].wait()
            assert sup.poll() == "restarting" and sup.failures == 1
            clock.t += 1.0
            assert sup.poll() == "running"
        assert sup.status()[0] == WARN           # running again after a failure
    finally:
        sup.stop()
    assert sup.restarts == 3 and procs[-1].poll() is not None


def test_supervisor_node_reports_on_diagnostics(executor, spin_until) -> None:
    clock = FakeClock()
    sup = SupervisedProcess("fowm_learner", lambda: _exits(1),
                            Backoff(initial_s=5.0, max_failures=3), clock)
    sup.start()
    node = SupervisorNode(sup, period_s=0.2)
    heard: list[DiagnosticArray] = []
    node.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, heard.append, qos.DIAGNOSTICS)
    executor.add_node(node)

    def said(text: str) -> bool:
        return any(text in s.message for m in heard for s in m.status
                   if s.hardware_id == "fowm_supervisor")

    assert spin_until(lambda: said("fowm_learner restarting in 5 s"), timeout_s=10)
    clock.t += 5.0
    assert spin_until(lambda: sup.restarts == 1, timeout_s=10)
    statuses = [s for m in heard for s in m.status if s.hardware_id == "fowm_supervisor"]
    assert {s.level for s in statuses} <= {OK, WARN, ERROR}
    keys = {kv.key for kv in statuses[-1].values}
    assert {"state", "restarts", "consecutive_failures", "last_exit_code"} <= keys


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sup")
    return {"dataset": collect(root / "dataset", 1, seed=0),
            "ckpt": tiny_checkpoint(root / "pre.safetensors")}


def _learner(data: dict[str, Path], bag_dir: Path, **extra: object) -> LearnerNode:
    values = {"bag_dir": str(bag_dir), "checkpoint": str(data["ckpt"]),
              "dataset_dir": str(data["dataset"]), "poll_s": 0.05, **extra}
    return LearnerNode(parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])


def test_learner_holds_its_work_dir_and_reports_health(
        executor, spin_until, data: dict[str, Path], tmp_path: Path) -> None:
    bag_dir = tmp_path / "bags"
    bag_dir.mkdir()
    (bag_dir / "metadata.yaml").write_text("stray")          # ignored, reported
    first = _learner(data, bag_dir)
    with pytest.raises(ConfigError, match="in use by another learner"):
        _learner(data, bag_dir)
    heard: list[DiagnosticArray] = []
    first.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, heard.append, qos.DIAGNOSTICS)
    executor.add_node(first)

    def learner_status() -> dict[str, str]:
        for m in reversed(heard):
            for s in m.status:
                if s.hardware_id == "fowm_learner" and any(kv.key == "ingested"
                                                           for kv in s.values):
                    return {kv.key: kv.value for kv in s.values} | {"message": s.message}
        return {}

    assert spin_until(lambda: learner_status().get("ignored") == "1", timeout_s=60)
    status = learner_status()
    assert status["state"] == "waiting for bags" and status["ingested"] == "0"
    assert {"failed", "step", "updates_per_s", "last_checkpoint", "owed_updates"} <= set(status)


def test_a_learner_process_whose_training_fails_exits_non_zero(
        data: dict[str, Path], tmp_path: Path) -> None:
    """The dataset is missing: training stops at start → exit 1 (a supervisor restarts it)."""
    ros_env = {**os.environ, "ROS_DOMAIN_ID": str(150 + os.getpid() % 50),
               "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    argv = [sys.executable, "-m", "fowm.nodes.learner_node", "--ros-args",
            "-p", f"bag_dir:={tmp_path / 'bags'}", "-p", f"checkpoint:={data['ckpt']}",
            "-p", f"dataset_dir:={tmp_path / 'absent'}"]
    done = subprocess.run(argv, env=ros_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "learner stopped" in done.stderr
