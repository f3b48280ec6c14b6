"""The planner node's side of the weight hot-swap (fowm_core.runtime.hotswap does the work).

Subscribes to /fowm/weights announcements ({path, sha256, step}, transient-local), offers each to
the background validator, and between two control ticks installs a validated planner. It
publishes which weights are live on the same latched topic as {"live": true, path, sha256, step,
swaps}, so a bag records which model produced each action. Kept out of planner_node.py so the
control loop's file only gains three calls: build, ``between_ticks()`` at the top of a tick, close.
"""

from __future__ import annotations

from typing import Any

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

from fowm.ros import qos
from fowm.ros.guard import InputGuard
from fowm_core.contract import topics
from fowm_core.errors import FowmError
from fowm_core.runtime.hotswap import HotSwapper, Weights, parse_announcement

# Depth 10: the learner's announcement and the planner's own live message come from two
# publishers and may arrive together; depth 1 could keep only the latter.
_ANNOUNCEMENTS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                            reliability=ReliabilityPolicy.RELIABLE,
                            durability=DurabilityPolicy.TRANSIENT_LOCAL)


class PlannerWeights:
    """Hot-swap for a PlannerNode (needs ``params.checkpoint``, ``cfg``, ``planner``)."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.live_pub = node.create_publisher(String, topics.WEIGHTS, qos.LATCHED)
        self.swapper = HotSwapper(node.cfg, Weights.of_checkpoint(node.params.checkpoint),
                                  log=self._log, device=node.planner.device)
        self.inputs: InputGuard = getattr(node, "inputs", None) or InputGuard(node)
        node.create_subscription(String, topics.WEIGHTS,
                                 self.inputs.guard(topics.WEIGHTS, self._on_weights),
                                 _ANNOUNCEMENTS)
        self.publish_live()

    @property
    def live(self) -> Weights:
        return self.swapper.live

    def _log(self, level: str, text: str) -> None:
        # One call site per severity: rclpy refuses a call site whose severity changes (it raised
        # in the validator thread the first time a refusal followed a success).
        logger = self.node.get_logger()
        if level == "error":
            logger.error(text)
        elif level == "warning":
            logger.warning(text)
        else:
            logger.info(text)

    def _on_weights(self, msg: String) -> None:
        try:
            weights = parse_announcement(msg.data)
        except FowmError as err:
            self.inputs.refuse(topics.WEIGHTS, str(err))
            return
        if weights is not None:
            self.swapper.offer(weights)

    def between_ticks(self) -> None:
        """Control thread, before a tick's work: install validated weights (a reference swap)."""
        cand = self.swapper.swap(self.node.planner)
        if cand is None:
            return
        self.node.planner, self.node.model = cand.planner, cand.model
        self.publish_live()
        self.node.get_logger().info(
            f"hot-swapped to {cand.weights.path} (step {cand.weights.step}, "
            f"sha256 {cand.weights.sha256[:12]}…)")

    def publish_live(self) -> None:
        if self.node.context.ok():
            self.live_pub.publish(String(data=self.live.message(
                live=True, swaps=self.swapper.stats.swaps, node=self.node.get_name())))

    def close(self) -> None:
        self.swapper.close()
