"""fowm_planner's parameters: the dataclass they are declared from (fowm.ros.params) and the
few that may change while it runs.

Live are the hold thresholds of the safety chain (docs/design.md "Safety chain"), and only ever
stricter while the planner runs: a typo in `ros2 param set` must not switch a check off. Every
other parameter is read-only (``ros2 param set`` refuses it): the node reads it once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from rclpy.node import Node

from fowm.ros.params import LiveGroup, only_tighter, watch_live
from fowm_core.runtime.control import DEFAULT_ACTION_SCALE_M
from fowm_core.runtime.control import param_meta as _p
from fowm_core.runtime.safety import SafetyLimits
from fowm_core.runtime.trust import TrustConfig


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
    max_future_s: float = field(default=0.5, metadata=_p(
        "refuse stamps further ahead of the node clock than this; hold on such ages", 0.0, 10.0))
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
    device: str = field(default="cpu", metadata=_p(
        "torch device: auto | cpu | cuda | cuda:N; the C row kernels are the CPU path, on CUDA "
        "a decision replays as one CUDA graph (fowm_core.planner.cuda_graph)"))
    trust: TrustConfig = field(default_factory=TrustConfig)     # docs/trust.md: who may swap


# The live parameters and the direction in which each one is stricter (params.only_tighter).
LIVE_RULES = {"max_uncertainty": "lower_or_off", "max_obs_age_s": "lower"}


def safety_limits(params: PlannerNodeParams) -> SafetyLimits:
    """The safety chain's thresholds (fowm_core.runtime.safety) that ``params`` set."""
    return SafetyLimits(params.max_obs_age_s, params.max_uncertainty, params.max_future_s)


def watch_live_limits(node: Node, current: Callable[[], PlannerNodeParams],
                      apply: Callable[[PlannerNodeParams], None]) -> None:
    """Apply ``ros2 param set`` on the live thresholds of ``node``: tighter only, else refused."""
    watch_live(node, LiveGroup("", current, apply, only_tighter(
        LIVE_RULES, "the running planner", "restart it with the new value")))
