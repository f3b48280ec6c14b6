"""fowm_planner: runs FOWM's uncertainty-penalized MPC at control rate on live observations.

Threading (docs/platform.md §1.5, §12): subscription callbacks only pair the streams
(fowm_core.data.sync, message_filters semantics) and store the newest set; the control loop runs on
its own thread with absolute monotonic deadlines (fowm.ros.timing), so an executor that stalls
(ros2/rclpy#1223) or a callback that blocks cannot delay a tick: the loop keeps ticking and, with
no fresh data, holds. Each tick: safety chain → plan → safety chain → publish the action (stamped
with the observation's stamp, docs/design.md), the planned EE path and /diagnostics.

In lock-step mode (evaluation through ROS against the sim twin on /clock) the loop plans each new
observation as soon as it is complete instead of on a wall-clock schedule.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import ColorRGBA, String
from visualization_msgs.msg import Marker, MarkerArray

from fowm.nodes.episode_manager import EVENTS_QOS
from fowm.ros import qos
from fowm.ros.hot_swap import PlannerWeights
from fowm.ros.params import LiveGroup, declare_from_dataclass, only_tighter, watch_live
from fowm.ros.timing import FixedRateLoop, Tick, TriggeredLoop
from fowm_core.config import FowmConfig
from fowm_core.contract import topics
from fowm_core.data import convert
from fowm_core.data.sync import ApproxTimeSync
from fowm_core.errors import CheckpointError, ConfigError, FowmError
from fowm_core.learning.checkpoints import load_agent, load_validated_model
from fowm_core.planner.mppi import Planner, PlanResult
from fowm_core.runtime.control import DEFAULT_ACTION_SCALE_M, planned_ee_path, uncertainty_rgba
from fowm_core.runtime.control import param_meta as _p
from fowm_core.runtime.safety import (
    HoldReason,
    SafetyLimits,
    Verdict,
    check_observation,
    check_plan,
)
from fowm_core.runtime.safety import safe_action as zero_action


@dataclass(frozen=True)
class PlannerNodeParams:
    checkpoint: str = field(default="", metadata=_p(
        "path of the .safetensors checkpoint (fowm_core.learning.checkpoints) to plan with"))
    rate_hz: float = field(default=6.25, metadata=_p(
        "control rate; the twin's agent step is 0.16 s (docs/algorithm.md §7.1)", 0.1, 100.0))
    lockstep: bool = field(default=False, metadata=_p(
        "plan every new observation at once (sim twin on /clock) instead of at rate_hz"))
    max_obs_age_s: float = field(default=0.5, metadata=_p(
        "hold when any observation stream is older than this (node clock − header stamp)",
        0.01, 60.0))
    max_uncertainty: float = field(default=0.0, metadata=_p(
        "hold when the Q-ensemble std of the chosen action exceeds this; 0 disables", 0.0, 1e9))
    eval_mode: bool = field(default=True, metadata=_p(
        "no exploration noise (evaluation); false adds N(0, std²) as when collecting data"))
    seed: int = field(default=1, metadata=_p(
        "planner RNG seed; each episode start re-seeds it with the episode's seed", 0, 2**31 - 1))
    sync_slop_s: float = field(default=0.02, metadata=_p(
        "approximate-time pairing tolerance of image, ee_pose and joint_states", 1e-4, 1.0))
    sync_queue_size: int = field(default=10, metadata=_p(
        "messages kept per stream while pairing", 1, 1000))
    action_scale_m: float = field(default=DEFAULT_ACTION_SCALE_M, metadata=_p(
        "metres of EE motion per unit action per step, for the planned-path marker", 0.0, 1.0))
    iterations: int = field(default=0, metadata=_p(
        "MPPI iterations; 0 keeps the checkpoint's planner config", 0, 100))
    num_samples: int = field(default=0, metadata=_p(
        "MPPI Gaussian samples; 0 keeps the checkpoint's planner config", 0, 100000))
    torch_threads: int = field(default=0, metadata=_p(
        "torch intra-op threads; 0 leaves torch's default", 0, 256))
    stacked_blocks: bool = field(default=False, metadata=_p(
        "one matmul per layer over all stacked heads instead of one head at a time: slower on "
        "idle cores, far faster when other busy processes share them (fewer OpenMP barriers)"))


# Live: the hold thresholds (docs/design.md "Safety chain"), only ever stricter while running (a
# typo in `ros2 param set` must not switch a check off); every other parameter is read-only.
LIVE_RULES = {"max_uncertainty": "lower_or_off", "max_obs_age_s": "lower"}


@dataclass
class _Observation:
    """One paired observation: messages in SYNC_STREAMS order plus episode bookkeeping."""

    seq: int
    stamp_ns: int
    msgs: dict[str, Any]
    first_of_episode: bool = False
    episode_seed: int | None = None


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
    plan_ms: deque[float] = field(default_factory=lambda: deque(maxlen=1000))


class PlannerNode(Node):
    """Node ``fowm_planner``: the control loop around fowm_core.planner.mppi.Planner."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("fowm_planner", **kwargs)
        self.params = declare_from_dataclass(self, "", PlannerNodeParams, live=LIVE_RULES)
        self.limits = SafetyLimits(self.params.max_obs_age_s, self.params.max_uncertainty)
        watch_live(self, LiveGroup("", lambda: self.params, self._apply_params,
                                   only_tighter(LIVE_RULES, "the running planner",
                                                "restart it with the new value")))
        if self.params.torch_threads:
            torch.set_num_threads(self.params.torch_threads)
        self.model, self.cfg = self._load(self.params.checkpoint)
        self.generator = torch.Generator().manual_seed(self.params.seed)
        self.planner = Planner(self.model, self.cfg, self.generator)
        self.action_dim = self.cfg.model.action_dim
        self.streams = self._streams()
        self.counters = _Counters()
        self._lock = threading.Lock()
        self._latest: _Observation | None = None
        self._pending_seed: int | None = None
        self._needs_reset = True
        self._planned_seq = -1
        self._seq = 0
        self._sync = ApproxTimeSync(len(self.streams), self.params.sync_queue_size,
                                    self.params.sync_slop_s)
        self._new_obs = threading.Event()

        self.action_pub = self.create_publisher(JointState, topics.ACTION, qos.COMMAND)
        self.marker_pub = self.create_publisher(MarkerArray, topics.PLAN_MARKERS, qos.COMMAND)
        self.diag_pub = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, qos.DIAGNOSTICS)
        # The episode subscription is created first so a start event is taken before the
        # observations that follow the reset it announces (executors serve in creation order).
        self.create_subscription(String, topics.EPISODE, self._on_episode, EVENTS_QOS)
        for index, (name, (msg_type, topic)) in enumerate(self.streams.items()):
            self.create_subscription(msg_type, topic, self._stream_callback(index, name),
                                     qos.SENSOR_SUB)
        self.weights = PlannerWeights(self)          # hot-swap: validated off this thread
        if self.params.lockstep:
            self.loop = TriggeredLoop(self._new_obs, self.tick, idle_s=0.25, name="fowm_planner")
        else:
            self.loop = FixedRateLoop(1.0 / self.params.rate_hz, self.tick, name="fowm_planner")
        self.loop.alive = self.context.ok
        self.loop.start()
        self.get_logger().info(
            f"planning {self.cfg.task} ({self.cfg.model.modality.value}, A={self.action_dim}) "
            f"{'lock-step' if self.params.lockstep else f'at {self.params.rate_hz:g} Hz'} "
            f"with {self.params.checkpoint}")

    def _apply_params(self, params: PlannerNodeParams) -> None:
        """Control thread reads ``self.limits`` once per tick: one reference swap."""
        self.params = params
        self.limits = SafetyLimits(params.max_obs_age_s, params.max_uncertainty)

    # -- start-up --------------------------------------------------------------------------
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

    def _streams(self) -> dict[str, tuple[type, str]]:
        """The streams paired into one observation: what build_state and the encoder need."""
        keys = convert.state_keys(self.cfg.task, self.cfg.model.modality.value)
        streams: dict[str, tuple[type, str]] = {}
        if self.cfg.model.uses_rgb:
            streams["image"] = (Image, topics.COLOR_IMAGE)
        streams["ee_pose"] = (PoseStamped, topics.EE_POSE)
        streams["joint_states"] = (JointState, topics.JOINT_STATES)
        if "obj" in keys:
            streams["object_pose"] = (PoseStamped, topics.OBJECT_POSE)
        if "goal" in keys:
            streams["goal_pose"] = (PoseStamped, topics.GOAL_POSE)
        return streams

    # -- executor side: store only ------------------------------------------------------------
    def _stream_callback(self, index: int, name: str) -> Any:
        def callback(msg: Any) -> None:
            matched = self._sync.add(index, convert.stamp_ns(msg), msg)
            if matched is not None:
                self._store(dict(zip(self.streams, matched, strict=True)))
        callback.__name__ = f"on_{name}"
        return callback

    def _store(self, msgs: dict[str, Any]) -> None:
        stamp = convert.stamp_ns(msgs["ee_pose"])
        with self._lock:
            if self._latest is not None and stamp <= self._latest.stamp_ns:
                return                              # out of order: never step back in time
            self._seq += 1
            obs = _Observation(self._seq, stamp, msgs)
            if self._pending_seed is not None:
                obs.first_of_episode, obs.episode_seed = True, self._pending_seed
                self._pending_seed = None
            self._latest = obs
        self._new_obs.set()

    def _on_episode(self, msg: String) -> None:
        try:
            event = json.loads(msg.data)
        except ValueError:
            self.get_logger().warning(f"ignoring a non-JSON episode event: {msg.data[:80]!r}")
            return
        if event.get("event") == "start":
            with self._lock:
                self._pending_seed = int(event.get("seed", self.params.seed))

    # -- control thread -------------------------------------------------------------------------
    def tick(self, tick: Tick) -> None:
        """One control step; never raises (a failure holds the robot and is reported)."""
        self.weights.between_ticks()                # between two ticks: swap if weights are ready
        with self._lock:
            obs = self._latest
        self.counters.ticks += 1
        now_ns = self.get_clock().now().nanoseconds
        ages = None if obs is None else {
            name: (now_ns - convert.stamp_ns(m)) * 1e-9 for name, m in obs.msgs.items()}
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

    def _arrays(self, obs: _Observation) -> dict[str, np.ndarray]:
        m = obs.msgs
        eef, _ = convert.pose_arrays(m["ee_pose"])
        _, gripper = convert.joint_state_arrays(m["joint_states"])
        out = {"ee_pose": eef, "gripper": np.array([gripper])}
        if "object_pose" in m:
            out["object_pose"] = convert.pose_arrays(m["object_pose"])[0]
        if "goal_pose" in m:
            out["goal_pose"] = convert.pose_arrays(m["goal_pose"])[0]
        return out                # pixels are uint8: always finite, so not checked

    def _model_obs(self, obs: _Observation, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
        state = convert.build_state(self.cfg.task, self.cfg.model.modality.value,
                                    arrays["ee_pose"], float(arrays["gripper"][0]),
                                    arrays.get("object_pose"), arrays.get("goal_pose"))
        model_obs: dict[str, Any] = {"state": state}
        if "image" in obs.msgs:
            # Resized here only, with the bag reader's function (no train/serve skew).
            rgb = convert.image_array(obs.msgs["image"])[None]            # (1, 3, H, W)
            model_obs["rgb"] = convert.resize_rgb(rgb, self.cfg.model.img_size)[0]
        return model_obs

    def _plan_and_publish(self, obs: _Observation, arrays: dict[str, np.ndarray]) -> None:
        if obs.first_of_episode or self._needs_reset:
            self.planner.reset()
            if obs.episode_seed is not None:
                self.generator.manual_seed(obs.episode_seed)
        t0 = obs.first_of_episode or self._needs_reset
        try:
            result = self.planner.plan(self._model_obs(obs, arrays), t0=t0,
                                       eval_mode=self.params.eval_mode)
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
        if verdict.hold:
            self._hold(obs, verdict)
        else:
            self._publish_action(obs.stamp_ns, result.action)
            self.counters.last_reason, self.counters.last_detail = HoldReason.NONE, ""
        self._publish_markers(obs, arrays["ee_pose"], result)
        self._publish_diagnostics()

    def _hold(self, obs: _Observation | None, verdict: Verdict) -> None:
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
        msg.header.stamp = _time_msg(stamp_ns)
        msg.header.frame_id = topics.BASE_FRAME
        msg.name = list(topics.ACTION_NAMES[:self.action_dim])
        msg.position = [float(v) for v in action]
        self.action_pub.publish(msg)

    def _publish_markers(self, obs: _Observation, ee_xyz: np.ndarray, result: PlanResult) -> None:
        if not np.isfinite(result.mean).all():
            return
        path = planned_ee_path(ee_xyz, result.mean, self.params.action_scale_m)
        r, g, b, a = uncertainty_rgba(result.uncertainty, self.params.max_uncertainty)
        clear = Marker(action=Marker.DELETEALL)
        line = Marker(ns="fowm_plan", id=0, type=Marker.LINE_STRIP, action=Marker.ADD)
        line.header.frame_id = topics.BASE_FRAME
        line.header.stamp = _time_msg(obs.stamp_ns)
        line.pose.orientation.w = 1.0
        line.scale.x = 0.01
        line.color = ColorRGBA(r=r, g=g, b=b, a=a)
        line.points = [Point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in path]
        line.colors = [line.color] * len(line.points)
        self.marker_pub.publish(MarkerArray(markers=[clear, line]))

    def _publish_diagnostics(self) -> None:
        c = self.counters
        timing = self.loop.stats.summary()
        level = DiagnosticStatus.OK
        if c.last_reason is not HoldReason.NONE:
            level = DiagnosticStatus.WARN
        if c.last_reason in (HoldReason.NON_FINITE_PLAN, HoldReason.PLANNER_ERROR,
                             HoldReason.NON_FINITE_OBS):
            level = DiagnosticStatus.ERROR
        values = {
            "ticks": c.ticks, "plans": c.plans, "holds": c.holds,
            "hold_reason": c.last_reason.value, "holds_by_reason": json.dumps(c.holds_by_reason),
            "uncertainty": c.last_uncertainty, "plan_latency_ms": c.last_plan_ms,
            "obs_age_s": c.last_obs_age_s, "lockstep": self.params.lockstep,
            "target_rate_hz": self.params.rate_hz, "max_uncertainty": self.params.max_uncertainty,
            "max_obs_age_s": self.params.max_obs_age_s, **timing,
        }
        status = DiagnosticStatus(
            level=level, name="fowm_planner: control loop", hardware_id="fowm_planner",
            message=c.last_detail or "planning",
            values=[KeyValue(key=k, value=_fmt(v)) for k, v in values.items()])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(msg)

    def destroy_node(self) -> None:
        # Parts are missing when __init__ failed (e.g. no checkpoint): stop only what exists.
        if getattr(self, "loop", None) is not None:
            self.loop.stop()
        if getattr(self, "weights", None) is not None:
            self.weights.close()
        super().destroy_node()


def _fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _time_msg(stamp_ns: int) -> Any:
    from builtin_interfaces.msg import Time

    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return Time(sec=sec, nanosec=nanosec)


def main(args: list[str] | None = None) -> None:
    from fowm.bringup import spin_nodes

    rclpy.init(args=args)
    spin_nodes([PlannerNode])


if __name__ == "__main__":
    main()
