"""QoS profiles of the topic contract (docs/design.md "QoS", REP-2003).

Sensor streams are published reliable, so `ros2 bag record`, rviz2 and reliable subscribers all get
data, and subscribed best-effort with depth 1, so a slow consumer sees the newest sample instead of
a backlog (a reliable subscriber to a best-effort publisher would get nothing,
docs/platform.md §1.6). Commands are reliable depth 1: the newest command wins and none is
silently lost on the wire.
Announcements (weights, robot_description) are transient-local so late joiners get the last one.
Episode events are reliable and deep (EVENTS), so no start/end is lost.
"""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

SENSOR_PUB = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=5,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
SENSOR_SUB = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1,
    reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE)
COMMAND = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
LATCHED = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
# /diagnostics as diagnostic_updater publishes it (reliable, depth 10), so rqt/aggregators match.
DIAGNOSTICS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=10,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
# /fowm/episode, publishers and subscribers alike: reliable and deep enough that no start/end is
# lost when "end" and the next "start" come back to back (depth 1 would keep only the newer).
EVENTS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=10,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
