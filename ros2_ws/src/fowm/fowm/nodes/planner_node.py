"""fowm_planner: runs FOWM's uncertainty-penalized MPC at control rate on live observations.

Threading (docs/platform.md §1.5, §12): subscription callbacks only pair the streams
(fowm_core.data.sync, message_filters semantics) and store the newest set; the control loop runs on
its own thread with absolute monotonic deadlines (fowm.ros.timing), so an executor that stalls
(ros2/rclpy#1223) or a callback that blocks cannot delay a tick: the loop keeps ticking and, with
no fresh data, holds. Each tick: safety chain → plan → safety chain → publish the action (stamped
with the observation's stamp, docs/design.md), the planned EE path and /diagnostics.

Lock-step mode (evaluation against the twin on /clock) plans each observation set as it completes.

A second publisher on an observation topic or on /fowm/action, or a second fowm_planner on the
domain (fowm.ros.publishers), holds every tick with reason input_conflict at level ERROR until it
is gone: the data cannot be trusted, and two controllers must not fight over one arm.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from sensor_msgs.msg import JointState
from visualization_msgs.msg import MarkerArray

from fowm.ros import qos
from fowm.ros.diagnostics import fmt
from fowm.ros.guard import UNSET_CLOCK_NS, InputGuard, restart_stopped
from fowm.ros.hot_swap import PlannerWeights
from fowm.ros.markers import plan_markers
from fowm.ros.observations import Observation, ObservationInbox, streams_for
from fowm.ros.params import declare_from_dataclass
from fowm.ros.planner_params import (
    LIVE_RULES,
    PlannerNodeParams,
    safety_limits,
    watch_live_limits,
)
from fowm.ros.publishers import PublisherWatch
from fowm.ros.spin import run_nodes
from fowm.ros.timing import FixedRateLoop, Tick, TriggeredLoop
from fowm_core.config import FowmConfig
from fowm_core.contract import topics
from fowm_core.data import convert
from fowm_core.errors import CheckpointError, ConfigError, FowmError
from fowm_core.learning.checkpoints import load_agent, load_validated_model
from fowm_core.model.device import generator_for, resolve_device
from fowm_core.planner.mppi import Planner, PlanResult
from fowm_core.runtime.control import planned_ee_path, uncertainty_rgba
from fowm_core.runtime.safety import HoldReason, Verdict, check_observation, check_plan
from fowm_core.runtime.safety import safe_action as zero_action


@dataclass(frozen=True)
class PlannerStats:
    """A running planner's record: loop timing, holds by reason and weight hot-swaps."""

    timing: dict[str, float]            # fowm.ros.timing loop summary (ticks, misses, latency)
    holds: dict[str, int]               # held ticks by HoldReason value
    swaps: int                          # validated checkpoints installed between ticks
    refused: list[tuple[str, str]]      # (path, why) of announcements that failed validation
    live_path: str                      # the weights planning now
    live_step: int | None


@dataclass
class _Counters:
    ticks: int = 0
    plans: int = 0
    holds: int = 0
    holds_by_reason: dict[str, int] = field(default_factory=dict)
    last_reason: HoldReason = HoldReason.NONE
    last_detail: str = ""
    last_uncertainty: float = float("nan")
    last_plan_ms: float = float("nan")
    last_obs_age_s: float = float("nan")
    tick_errors: int = 0
    loop_restarts: int = 0
    plan_ms: deque[float] = field(default_factory=lambda: deque(maxlen=1000))


class PlannerNode(Node):
    """Node ``fowm_planner``: the control loop around fowm_core.planner.mppi.Planner."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("fowm_planner", **kwargs)
        self.params = declare_from_dataclass(self, "", PlannerNodeParams, live=LIVE_RULES)
        self.limits = safety_limits(self.params)
        self.inputs = InputGuard(self, self.params.max_future_s)
        watch_live_limits(self, lambda: self.params, self._apply_params)
        if self.params.torch_threads:
            torch.set_num_threads(self.params.torch_threads)
        self.model, self.cfg = self._load(self.params.checkpoint)
        device = resolve_device(self.params.device)
        self.model = self.model.to(device)
        self.generator = generator_for(device, self.params.seed)
        self.planner = Planner(self.model, self.cfg, self.generator)
        self.action_dim = self.cfg.model.action_dim
        self.streams = streams_for(self.cfg)
        self.counters = _Counters()
        self._needs_reset = True
        self._planned_seq = -1
        self._closing = False
        self.inbox = ObservationInbox(
            self, self.streams, self.inputs, queue_size=self.params.sync_queue_size,
            slop_s=self.params.sync_slop_s, max_future_s=self.params.max_future_s,
            default_seed=self.params.seed)

        self.action_pub = self.create_publisher(JointState, topics.ACTION, qos.COMMAND)
        self.marker_pub = self.create_publisher(MarkerArray, topics.PLAN_MARKERS, qos.COMMAND)
        self.diag_pub = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, qos.DIAGNOSTICS)
        self.inbox.subscribe(qos.SENSOR_SUB, qos.EVENTS)
        self.weights = PlannerWeights(self)          # hot-swap: validated off this thread
        self.loop = self._make_loop()
        self.graph_watch = PublisherWatch(self, [t for _, t in self.streams.values()],
                                         topics.ACTION)
        self.loop.start()
        # Notices a dead control or validator thread and restarts it (ros/guard.py).
        self.create_timer(1.0, self.inputs.guard("watchdog", self._watchdog))
        self.get_logger().info(
            f"planning {self.cfg.task} ({self.cfg.model.modality.value}, A={self.action_dim}) "
            f"{'lock-step' if self.params.lockstep else f'at {self.params.rate_hz:g} Hz'} "
            f"with {self.params.checkpoint}")

    def _apply_params(self, params: PlannerNodeParams) -> None:
        """Control thread reads ``self.limits`` once per tick: one reference swap."""
        self.params = params
        self.limits = safety_limits(params)

    # -- start-up --------------------------------------------------------------------------
    def _make_loop(self) -> FixedRateLoop | TriggeredLoop:
        loop = (TriggeredLoop(self.inbox.new_obs, self.tick, idle_s=0.25, name="fowm_planner")
                if self.params.lockstep else
                FixedRateLoop(1.0 / self.params.rate_hz, self.tick, name="fowm_planner"))
        loop.alive = self.context.ok
        return loop

    def _watchdog(self) -> None:
        """Executor timer: rebuild a control loop whose thread stopped; revive the validator."""
        if not self._closing and self.context.ok():
            if (loop := restart_stopped(self.loop, self._make_loop)) is not None:
                self.loop, self.counters.loop_restarts = loop, self.counters.loop_restarts + 1
                self.get_logger().error(f"the control loop thread had stopped; restarted it "
                                        f"({self.counters.loop_restarts} restarts)")
            self.weights.swapper.ensure_running()

    def _load(self, path: str) -> tuple[torch.nn.Module, FowmConfig]:
        if not path:
            msg = ("parameter checkpoint is empty: set it to a .safetensors file written by "
                   "checkpoints.save_agent (e.g. -p checkpoint:=runs/lift.safetensors)")
            raise ConfigError(msg)
        try:
            cfg = load_agent(path).cfg
            model, _ = load_validated_model(path, cfg.model)
        except (OSError, CheckpointError) as err:
            msg = f"cannot plan with checkpoint {path}: {err}"
            raise CheckpointError(msg) from err
        if cfg.model.uses_state:
            wanted = convert.state_dim(cfg.task, cfg.model.modality.value)
            if cfg.model.state_dim != wanted:
                msg = (f"checkpoint {path} takes a {cfg.model.state_dim}-value state, but "
                       f"{cfg.task} in {cfg.model.modality.value} mode builds {wanted} values "
                       f"(convert.build_state); it was trained on another state layout: "
                       f"pretrain again")
                raise ConfigError(msg)
        overrides = {k: v for k, v in (("iterations", self.params.iterations),
                                       ("num_samples", self.params.num_samples),
                                       ("stacked_blocks", self.params.stacked_blocks)) if v}
        if overrides:
            elites = min(cfg.planner.num_elites, overrides.get("num_samples", 10**9))
            cfg = cfg.with_overrides({"planner": {**overrides, "num_elites": elites}})
        return model, cfg

    # -- control thread -------------------------------------------------------------------------
    def tick(self, tick: Tick) -> None:
        """One control step; never raises (a failure holds the robot and is reported)."""
        try:
            self._tick()
        except Exception as err:  # the loop must go on: hold and report
            self._tick_failed(err)

    def _tick_failed(self, err: Exception) -> None:
        if self._closing or not self.context.ok():
            return                                  # shutting down: publishers are gone
        self.counters.tick_errors += 1
        detail = f"control tick failed ({type(err).__name__}: {err}); holding"
        self.get_logger().error(detail, throttle_duration_sec=5.0)
        try:
            self._hold(self.inbox.newest(), Verdict(HoldReason.PLANNER_ERROR, detail))
        except Exception as again:  # not even the hold went out: count, go on
            self.get_logger().error(f"holding failed too: {again}", throttle_duration_sec=5.0)

    def _tick(self) -> None:
        self.weights.between_ticks()                # between two ticks: swap if weights are ready
        obs = self.inbox.newest()
        self.counters.ticks += 1
        if self.graph_watch.check() is not None:
            self._hold(obs, Verdict(HoldReason.INPUT_CONFLICT, self.graph_watch.conflict or ""))
            return
        now_ns = self.get_clock().now().nanoseconds
        ages = None if obs is None else {
            name: (now_ns - convert.stamp_ns(m)) * 1e-9 for name, m in obs.msgs.items()}
        if ages is not None and now_ns == UNSET_CLOCK_NS:
            ages = dict.fromkeys(ages, 0.0)     # sim time before /clock: nothing to judge by
        try:
            arrays = {} if obs is None else self._arrays(obs)
        except FowmError as err:
            self._hold(obs, Verdict(HoldReason.NON_FINITE_OBS, f"bad observation: {err}"))
            return
        verdict = check_observation(ages, arrays, self.limits)
        self.counters.last_obs_age_s = max(ages.values()) if ages else float("nan")
        if verdict.hold:
            self._hold(obs, verdict)
            return
        assert obs is not None
        if obs.seq == self._planned_seq:
            self._publish_diagnostics()             # nothing new: the last answer stands
            return
        self._plan_and_publish(obs, arrays)

    def _arrays(self, obs: Observation) -> dict[str, np.ndarray]:
        m = obs.msgs
        eef, _ = convert.pose_arrays(m["ee_pose"])
        _, gripper = convert.joint_state_arrays(m["joint_states"])
        out = {"ee_pose": eef, "gripper": np.array([gripper])}
        if "object_pose" in m:
            out["object_pose"] = convert.pose_arrays(m["object_pose"])[0]
        if "goal_pose" in m:
            out["goal_pose"] = convert.pose_arrays(m["goal_pose"])[0]
        return out                # pixels are uint8: always finite, so not checked

    def _model_obs(self, obs: Observation, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
        state = convert.build_state(self.cfg.task, self.cfg.model.modality.value,
                                    arrays["ee_pose"], float(arrays["gripper"][0]),
                                    arrays.get("object_pose"), arrays.get("goal_pose"))
        model_obs: dict[str, Any] = {"state": state}
        if "image" in obs.msgs:
            # The bag reader's resize (resize_rgb), straight from the message's HWC buffer.
            model_obs["rgb"] = convert.model_image(obs.msgs["image"], self.cfg.model.img_size)
        return model_obs

    def _plan_and_publish(self, obs: Observation, arrays: dict[str, np.ndarray]) -> None:
        if obs.first_of_episode or self._needs_reset:
            self.planner.reset()
            if obs.episode_seed is not None:
                self.generator.manual_seed(obs.episode_seed)
        t0 = obs.first_of_episode or self._needs_reset
        self.weights.ring.push(model_obs := self._model_obs(obs, arrays))   # for the swap gate
        try:
            result = self.planner.plan(model_obs, t0=t0, eval_mode=self.params.eval_mode)
        except (FowmError, RuntimeError, ValueError) as err:
            self.get_logger().error(f"planning failed, holding: {err}", throttle_duration_sec=5.0)
            self._hold(obs, Verdict(HoldReason.PLANNER_ERROR, str(err)))
            return
        self._planned_seq, self._needs_reset = obs.seq, False
        self.counters.plans += 1
        self.counters.last_uncertainty = result.uncertainty
        self.counters.last_plan_ms = result.elapsed_s * 1e3
        self.counters.plan_ms.append(self.counters.last_plan_ms)
        verdict = check_plan(result.action, result.uncertainty, self.limits,
                             {"mean": result.mean, "std": result.std,
                              "value": np.asarray(result.value)})
        self.weights.after_tick(result.uncertainty, verdict.hold)    # post-swap rollback
        if verdict.hold:
            self._hold(obs, verdict)
        else:
            self._publish_action(obs.stamp_ns, result.action)
            self.counters.last_reason, self.counters.last_detail = HoldReason.NONE, ""
        self._publish_markers(obs, arrays["ee_pose"], result)
        self._publish_diagnostics()

    def _hold(self, obs: Observation | None, verdict: Verdict) -> None:
        """Publish the safe command (docs/design.md: zero motion, never a stale command)."""
        c = self.counters
        c.holds += 1
        c.holds_by_reason[verdict.reason.value] = c.holds_by_reason.get(verdict.reason.value, 0) + 1
        if verdict.reason is not c.last_reason:
            self.get_logger().warning(f"holding: {verdict.detail}")
        c.last_reason, c.last_detail = verdict.reason, verdict.detail
        if obs is not None:
            self._planned_seq = obs.seq
            self._publish_action(obs.stamp_ns, zero_action(self.action_dim))
        elif not self.params.lockstep:
            # Nothing to answer yet: still command zero motion, stamped now. In lock-step a stamp
            # from /clock could equal the sim's pending observation and be taken as its answer.
            self._publish_action(self.get_clock().now().nanoseconds, zero_action(self.action_dim))
        self._publish_diagnostics()

    # -- publishing ------------------------------------------------------------------------------
    def _publish_action(self, stamp_ns: int, action: np.ndarray) -> None:
        msg = JointState()
        msg.header.stamp = convert.to_time(stamp_ns, Time)
        msg.header.frame_id = topics.BASE_FRAME
        msg.name = list(topics.ACTION_NAMES[:self.action_dim])
        msg.position = [float(v) for v in action]
        self.action_pub.publish(msg)

    def _publish_markers(self, obs: Observation, ee_xyz: np.ndarray, result: PlanResult) -> None:
        if not np.isfinite(result.mean).all():
            return
        path = planned_ee_path(ee_xyz, result.mean, self.params.action_scale_m)
        rgba = uncertainty_rgba(result.uncertainty, self.params.max_uncertainty)
        self.marker_pub.publish(plan_markers(path, rgba, obs.stamp_ns))

    def _publish_diagnostics(self) -> None:
        c = self.counters
        timing = self.loop.stats.summary()
        level = DiagnosticStatus.OK
        if c.last_reason is not HoldReason.NONE:
            level = DiagnosticStatus.WARN
        if c.last_reason in (HoldReason.NON_FINITE_PLAN, HoldReason.PLANNER_ERROR,
                             HoldReason.NON_FINITE_OBS, HoldReason.FUTURE_STAMP,
                             HoldReason.INPUT_CONFLICT):
            level = DiagnosticStatus.ERROR
        values = {
            "ticks": c.ticks, "plans": c.plans, "holds": c.holds,
            "hold_reason": c.last_reason.value, "holds_by_reason": json.dumps(c.holds_by_reason),
            "uncertainty": c.last_uncertainty, "plan_latency_ms": c.last_plan_ms,
            "obs_age_s": c.last_obs_age_s, "lockstep": self.params.lockstep,
            "target_rate_hz": self.params.rate_hz, "max_uncertainty": self.params.max_uncertainty,
            "max_obs_age_s": self.params.max_obs_age_s, **timing, **self.inputs.values(),
            "tick_errors": c.tick_errors, "loop_restarts": c.loop_restarts,
            **self.weights.values(),
        }
        status = DiagnosticStatus(
            level=level, name="fowm_planner: control loop", hardware_id="fowm_planner",
            message=c.last_detail or "planning",
            values=[KeyValue(key=k, value=fmt(v)) for k, v in values.items()])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(msg)

    def stats(self) -> PlannerStats:
        """What the planner has done so far (for fowm.bringup.run_stack and tests)."""
        swaps = self.weights.swapper.stats
        live = self.weights.live
        return PlannerStats(timing=self.loop.stats.summary(),
                            holds=dict(self.counters.holds_by_reason), swaps=swaps.swaps,
                            refused=list(swaps.refused), live_path=str(live.path),
                            live_step=live.step)

    def destroy_node(self) -> None:
        self._closing = True
        # Parts are missing when __init__ failed (e.g. no checkpoint): stop only what exists.
        if getattr(self, "loop", None) is not None:
            self.loop.stop()
        if getattr(self, "weights", None) is not None:
            self.weights.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    """Console script `ros2 run fowm planner_node`: this node until SIGINT/SIGTERM."""
    run_nodes([PlannerNode], args)


if __name__ == "__main__":
    main()
