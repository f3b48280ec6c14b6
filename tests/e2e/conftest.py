"""The e2e stacks' rclpy context: one executor on a domain of its own."""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator

import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor


@pytest.fixture
def executor(monkeypatch: pytest.MonkeyPatch,
             request: pytest.FixtureRequest) -> Iterator[SingleThreadedExecutor]:
    """rclpy on a domain of its own (docs/platform.md §1.8; the module's name keeps two e2e
    files of one run apart), one executor, clean shutdown."""
    offset = zlib.crc32(request.module.__name__.encode())
    monkeypatch.setenv("ROS_DOMAIN_ID", str(150 + (os.getpid() + offset) % 80))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    monkeypatch.setenv("MUJOCO_GL", "egl")
    rclpy.init()
    ex = SingleThreadedExecutor()
    try:
        yield ex
    finally:
        for node in list(ex.get_nodes()):
            ex.remove_node(node)
            node.destroy_node()
        ex.shutdown()
        rclpy.try_shutdown()

