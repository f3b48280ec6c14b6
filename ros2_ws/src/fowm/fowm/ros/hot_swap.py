"""The planner node's side of the weight hot-swap: only trusted weights act (docs/trust.md).

Subscribes to /fowm/weights announcements (transient-local) and offers each to
fowm_core.runtime.hotswap.HotSwapper, whose ``TrustPolicy`` is built from the node's ``trust``
parameters (key file, trusted directory, size limit, gate and monitor bands; read-only at run
time). Every refusal is counted by layer and reported, rate-limited, on /diagnostics with its
reason. Between two control ticks it installs a validated planner; after each planned tick
``after_tick`` feeds the post-swap monitor and rolls back when uncertainty or holds jump. It
publishes which weights are live on the same latched topic, signed with role "planner-live", so a
bag can tell the planner's report from a forgery. Kept out of planner_node.py so the control
loop's file only gains a few calls.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from rcl_interfaces.msg import SetParametersResult
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

from fowm.ros import qos
from fowm.ros.diagnostics import OK, WARN, DiagnosticsReporter
from fowm.ros.guard import InputGuard
from fowm_core.contract import topics
from fowm_core.errors import FowmError
from fowm_core.runtime.gate import ObservationRing
from fowm_core.runtime.hotswap import HotSwapper, Weights, live_message, parse_offer
from fowm_core.runtime.origin import TrustPolicy
from fowm_core.runtime.trust import TrustConfig

# Depth 10: the learner's announcement and the planner's own live message come from two
# publishers and may arrive together; depth 1 could keep only the latter.
_ANNOUNCEMENTS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                            reliability=ReliabilityPolicy.RELIABLE,
                            durability=DurabilityPolicy.TRANSIENT_LOCAL)
RECENT_S = 60.0          # a refusal or rollback keeps the weights status at WARN this long


def build_policy(cfg: TrustConfig) -> tuple[TrustPolicy | None, str]:
    """The policy the ``trust`` parameters describe, or None (hot-swap disabled) and why.

    No trusted_dir, or signatures required without a key file: nothing can be trusted, so every
    announcement is refused (the planner keeps its start weights). A key file that is given but
    unusable (mode, owner, length) stops the node: that is a broken installation."""
    if not cfg.trusted_dir:
        return None, ("hot-swap disabled: trust.trusted_dir is empty (set it to the learner's "
                      "<work_dir>/checkpoints)")
    if cfg.require_signature and not cfg.key_file:
        return None, ("hot-swap disabled: trust.key_file is empty; create a key with `fowm "
                      "keygen PATH` and give the same PATH to the learner and the planner")
    return TrustPolicy.from_config(cfg), ""


class PlannerWeights:
    """Hot-swap for a PlannerNode (needs ``params.checkpoint``, ``params.trust``, ``cfg``,
    ``model``, ``planner``)."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.trust: TrustConfig = node.params.trust
        self.policy, disabled = build_policy(self.trust)
        self.key = self.policy.key if self.policy is not None else None
        self.sender = f"{node.get_name()}/{os.getpid()}"
        self.inputs: InputGuard = getattr(node, "inputs", None) or InputGuard(node)
        self._problem: tuple[float, str] = (-1e9, "")
        self.live_pub = node.create_publisher(String, topics.WEIGHTS, qos.LATCHED)
        self.diag = DiagnosticsReporter(node, "fowm_planner: weights", "fowm_planner")
        self.swapper = HotSwapper(
            node.cfg, Weights.of_checkpoint(node.params.checkpoint), node.model, self.policy,
            gate_cfg=self.trust.gate, monitor_cfg=self.trust.monitor, log=self._log,
            on_refused=self._refused, ring=ObservationRing(64), disabled_reason=disabled,
            device=node.planner.device)
        node.add_on_set_parameters_callback(_trust_read_only)
        node.create_subscription(String, topics.WEIGHTS,
                                 self.inputs.guard(topics.WEIGHTS, self._on_weights),
                                 _ANNOUNCEMENTS)
        node.create_timer(1.0, self.inputs.guard("weights report", self.report))
        logger = node.get_logger()
        if disabled and self.trust.trusted_dir:        # configured for learning, but no key
            logger.warning(f"{disabled}; the planner keeps {node.params.checkpoint}")
        elif disabled:                                 # no learner: nothing to swap, by design
            logger.info(f"{disabled}; the planner keeps {node.params.checkpoint}")
        elif self.key is None:
            logger.warning("trust.require_signature is false: announcements are NOT "
                           "authenticated; anyone on the DDS domain may choose which checkpoint "
                           f"of {self.trust.trusted_dir} acts (local experiments only)")
        self.publish_live()

    @property
    def live(self) -> Weights:
        return self.swapper.live

    @property
    def ring(self) -> ObservationRing:
        return self.swapper.ring

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

    def _refused(self, stage: str, path: str, why: str) -> None:
        """Any thread: counted per topic and logged at most every few seconds (InputGuard)."""
        text = f"weights {path[:200]} refused ({stage}): {why}"
        self._problem = (time.monotonic(), text)
        self.inputs.refuse(topics.WEIGHTS, text)

    def _on_weights(self, msg: String) -> None:
        try:
            body = parse_offer(msg.data)
        except FowmError as err:
            self.inputs.refuse(topics.WEIGHTS, str(err))
            return
        if body is not None:
            self.swapper.offer(body)

    # -- control thread --------------------------------------------------------------------------
    def between_ticks(self) -> None:
        """Before a tick's work: install validated weights (a reference swap)."""
        cand = self.swapper.swap(self.node.planner)
        if cand is None:
            return
        self.node.planner, self.node.model = cand.planner, cand.model
        self.publish_live()
        self.node.get_logger().info(
            f"hot-swapped to {cand.weights.path} (step {cand.weights.step}, "
            f"sha256 {cand.weights.sha256[:12]}…)")

    def after_tick(self, uncertainty: float | None, held: bool) -> None:
        """After a planned tick: feed the post-swap monitor; roll back on a jump."""
        monitor = self.swapper.monitor
        monitor.tick(uncertainty, held)
        if not monitor.should_roll_back():
            return
        bad, reason = self.swapper.live, monitor.reason
        back = self.swapper.roll_back(self.node.planner)
        if back is None:
            return
        weights, self.node.planner, self.node.model = back
        text = (f"rolled back from {bad.path} (step {bad.step}) to {weights.path} (step "
                f"{weights.step}): {reason}; step {self.swapper.floor} and below stay refused")
        self._problem = (time.monotonic(), text)
        self.publish_live()
        self.node.get_logger().error(text)
        self.report()

    def publish_live(self) -> None:
        if self.node.context.ok():
            self.live_pub.publish(String(data=live_message(
                self.key, self.live, self.node.cfg, swaps=self.swapper.stats.swaps,
                node=self.node.get_name(), sender=self.sender)))

    # -- reporting -------------------------------------------------------------------------------
    def values(self) -> dict[str, Any]:
        """Key/values for the planner's /diagnostics: swaps, refusals by layer, rollbacks."""
        stats = self.swapper.stats
        return {"weights_live_step": self.live.step, "weights_swaps": stats.swaps,
                "weights_refused": sum(stats.refused_by_stage.values()),
                "weights_refused_by_stage": json.dumps(stats.refused_by_stage, sort_keys=True),
                "weights_rollbacks": len(stats.rollbacks),
                "weights_gate_deferred": stats.deferred,
                "weights_last_refused": stats.refused[-1][1][:200] if stats.refused else "",
                "weights_last_gate": stats.last_gate[:200],
                "weights_step_floor": self.swapper.floor,
                "validator_restarts": stats.restarts}

    def report(self) -> None:
        """The "fowm_planner: weights" status (1 Hz timer and after a rollback): WARN for a
        minute after a refusal or a rollback, and always while nothing can be trusted or
        announcements are not authenticated."""
        if not self.node.context.ok():
            return
        values = self.values()
        when, problem = self._problem
        if self.policy is None:
            level = WARN if self.trust.trusted_dir else OK
            message = self.swapper.disabled_reason
        elif self.key is None:
            level, message = WARN, "announcements are NOT authenticated (require_signature false)"
        elif time.monotonic() - when < RECENT_S:
            level, message = WARN, problem[:300]
        else:
            level, message = OK, (f"live step {self.live.step}, {values['weights_swaps']} swaps, "
                                  f"{values['weights_refused']} refused")
        self.diag.update(level, message, **values)
        self.diag.publish()

    def close(self) -> None:
        self.swapper.close()


def _trust_read_only(params: list[Any]) -> SetParametersResult:
    """``trust.*`` is read once at start: a changed value would not act, so it is refused."""
    names = [p.name for p in params if p.name.startswith("trust.")]
    if names:
        return SetParametersResult(successful=False, reason=(
            f"{', '.join(names)} are read-only at run time (docs/trust.md): restart the planner "
            "with the new value"))
    return SetParametersResult(successful=True)
