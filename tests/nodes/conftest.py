"""Real-rclpy fixtures for node tests: one ROS context per test, isolated by domain ID.

Each test gets its own ``rclpy.init()``/``try_shutdown()`` with a ROS_DOMAIN_ID unique to this
process and test, and discovery limited to localhost, so tests running in parallel (or other
people's stacks on the same machine) do not see each other (docs/platform.md §1.8). Nodes are
spun by a SingleThreadedExecutor inside the test; waiting polls a condition with a generous
deadline instead of sleeping, and no test asserts absolute timing.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor

REPO_ROOT = Path(__file__).resolve().parents[2]
# The ROS package `fowm` is pip-installed into the venv by `make setup` (editable), like fowm_core.

_test_index = itertools.count()


def _domain_id() -> int:
    # 1..100: valid Fast DDS domains (> 232 fails) away from the default 0.
    return 1 + (os.getpid() * 31 + next(_test_index)) % 100


@pytest.fixture
def ros(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """rclpy initialised on a fresh domain for one test, then shut down."""
    monkeypatch.setenv("ROS_DOMAIN_ID", str(_domain_id()))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    rclpy.init()
    try:
        yield
    finally:
        rclpy.try_shutdown()


@pytest.fixture
def executor(ros: None) -> Iterator[SingleThreadedExecutor]:
    ex = SingleThreadedExecutor()
    try:
        yield ex
    finally:
        ex.shutdown()
        for node in list(ex.get_nodes()):
            ex.remove_node(node)
            node.destroy_node()


SpinUntil = Callable[..., bool]


@pytest.fixture
def spin_until(executor: SingleThreadedExecutor) -> SpinUntil:
    """spin_until(cond, timeout_s=10, every=None): spin until cond() is true; False on timeout.

    ``every`` (optional) is called about every 50 ms while waiting, e.g. to keep publishing.
    The timeout only guards against hangs; tests assert on conditions, never on elapsed time.
    """

    def spin(cond: Callable[[], bool], timeout_s: float = 10.0,
             every: Callable[[], None] | None = None) -> bool:
        deadline = time.monotonic() + timeout_s
        next_every = 0.0
        while time.monotonic() < deadline:
            if every is not None and time.monotonic() >= next_every:
                every()
                next_every = time.monotonic() + 0.05
            executor.spin_once(timeout_sec=0.005)
            if cond():
                return True
        return False

    return spin
