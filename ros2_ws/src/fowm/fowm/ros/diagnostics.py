"""Small /diagnostics helper: one DiagnosticStatus per node, published on change and periodically.

The hot path reports problems here instead of logging at info (docs/contributing.md); the full
diagnostic_updater package is not on PyPI, so this is the few lines fowm needs of it.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from fowm.ros import qos
from fowm_core.contract import topics

if TYPE_CHECKING:
    from rclpy.node import Node

OK = DiagnosticStatus.OK
WARN = DiagnosticStatus.WARN
ERROR = DiagnosticStatus.ERROR
LEVEL_NAMES = {OK: "OK", WARN: "WARN", ERROR: "ERROR", DiagnosticStatus.STALE: "STALE"}


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
