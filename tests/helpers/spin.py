"""A bounded spin: a guard against hangs in stack tests, not a timing check."""

from __future__ import annotations

import time
from collections.abc import Callable

from rclpy.executors import SingleThreadedExecutor


def spin_until(ex: SingleThreadedExecutor, cond: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ex.spin_once(timeout_sec=0.01)
        if cond():
            return True
    return False
