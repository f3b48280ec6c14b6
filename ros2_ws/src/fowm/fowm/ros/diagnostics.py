"""Small /diagnostics helper: one DiagnosticStatus per node, published on change and periodically.

The hot path reports problems here instead of logging at info (docs/contributing.md); the full
diagnostic_updater package is not on PyPI, so this is the few lines fowm needs of it. Every fowm
node publishes its health at least once a second (``publish_every``), on a steady-clock timer, so
a lock-step stack on /clock still reports while simulated time stands still.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.clock import Clock, ClockType

from fowm.ros import qos
from fowm.ros.guard import InputGuard
from fowm_core.contract import topics

if TYPE_CHECKING:
    from rclpy.node import Node

OK = DiagnosticStatus.OK
WARN = DiagnosticStatus.WARN
ERROR = DiagnosticStatus.ERROR
LEVEL_NAMES = {OK: "OK", WARN: "WARN", ERROR: "ERROR", DiagnosticStatus.STALE: "STALE"}
PERIOD_S = 1.0
# What a node's health function returns: level, message, key values.
Health = tuple[bytes, str, Mapping[str, object]]


def fmt(value: object) -> str:
    """A diagnostic value as text: floats with 6 significant digits."""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


class DiagnosticsReporter:
    """One status on /diagnostics, sent when level or message change and on publish().

    Thread-safe: a capture thread may update while the executor's timer publishes.
    """

    def __init__(self, node: Node, name: str, hardware_id: str) -> None:
        self._node = node
        self._name = name
        self.hardware_id = hardware_id
        self._pub = node.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, qos.DIAGNOSTICS)
        self.level = OK
        self.message = "starting"
        self.values: dict[str, str] = {}
        self._lock = threading.Lock()

    def update(self, level: bytes, message: str, **values: object) -> None:
        """Set the status; publish at once if the level or the message changed."""
        with self._lock:
            changed = (level, message) != (self.level, self.message)
            self.level, self.message = level, message
            self.values.update({k: str(v) for k, v in values.items()})
        if changed:
            self.publish()

    def publish(self) -> None:
        with self._lock:
            status = DiagnosticStatus(
                level=self.level, name=self._name, message=self.message,
                hardware_id=self.hardware_id,
                values=[KeyValue(key=k, value=v) for k, v in sorted(self.values.items())])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self._node.get_clock().now().to_msg()
        self._pub.publish(msg)

    def publish_every(self, period_s: float = PERIOD_S,
                      health: Callable[[], Health] | None = None) -> None:
        """Publish every ``period_s`` (steady clock), refreshed from ``health()`` first if given.

        A ``health`` that raises becomes an ERROR status naming the exception: a diagnostics bug
        must not kill the executor, and must not leave a stale "OK" behind either.
        """

        def tick() -> None:
            if health is not None:
                try:
                    level, message, values = health()
                except Exception as err:
                    level, message, values = ERROR, f"health check failed: {err!r}", {}
                with self._lock:
                    self.level, self.message = level, message
                    self.values.update({k: str(v) for k, v in values.items()})
            try:
                self.publish()
            except Exception as err:  # a context shut down under us: the next tick retries
                self._node.get_logger().warning(f"diagnostics publish failed: {err!r}",
                                                throttle_duration_sec=5.0)

        tick.fowm_guarded = True            # type: ignore[attr-defined]  (ros/guard.py)
        self._node.create_timer(period_s, tick, clock=Clock(clock_type=ClockType.STEADY_TIME))


def with_guard(health: Health, inputs: InputGuard, **restarts: int) -> Health:
    """A node's own health with its guard's counters folded in (fowm.ros.guard).

    Refused inputs and restarted threads make an OK status a WARN that names them (a node that
    keeps working on bad input is not healthy); a WARN or ERROR of the node's own stands.
    """
    level, message, values = health
    values = {**values, **inputs.values(), **restarts}
    refused = inputs.total
    problems = ([f"refused {refused} inputs"] if refused else []) + [
        f"{name.replace('_', ' ')} {count}" for name, count in restarts.items() if count]
    if problems and level == OK:
        return WARN, f"{message}; {', '.join(problems)}", values
    return level, message, values
