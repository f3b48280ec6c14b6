"""Behavioural checks around a weight swap (docs/trust.md): before, the gate; after, the monitor.

``gate`` plans recent *real* observations of the running robot (an ``ObservationRing`` the control
thread feeds) with the candidate and with the live weights, each plan in eval mode from a fresh
warm start with a fixed generator (the same seed for both: common random numbers), and passes the
candidate only if every action is finite and in [-1, 1], and its median value and median
uncertainty stay within a band around the live weights'. ``SwapMonitor`` watches uncertainty and
holds per tick and asks for a rollback when either jumps after a swap. Pure: no ROS.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from torch import nn

from fowm_core.config import FowmConfig
from fowm_core.errors import ConfigError, FowmError
from fowm_core.model.device import generator_for
from fowm_core.planner.mppi import Planner
from fowm_core.runtime.control import param_meta as _p

Obs = Mapping[str, np.ndarray]


def _require(cond: bool, name: str, value: Any, expected: str) -> None:
    if not cond:
        msg = f"{name}={value!r} is invalid: expected {expected}"
        raise ConfigError(msg)


@dataclass(frozen=True)
class GateConfig:
    """Bands measured on consecutive checkpoints of honest finetuning (docs/trust.md, tests)."""

    observations: int = field(default=8, metadata=_p(
        "recent real observations planned with both weights", 1, 256))
    min_observations: int = field(default=4, metadata=_p(
        "fewer recorded observations than this: the candidate waits (robot not running yet)",
        1, 256))
    abs_value_band: float = field(default=0.5, metadata=_p(
        "|median value − live median value| may be up to abs + rel·|live|: abs part", 0.0, 1e9))
    rel_value_band: float = field(default=0.5, metadata=_p(
        "... and relative part", 0.0, 1e9))
    uncertainty_factor: float = field(default=4.0, metadata=_p(
        "median uncertainty may be up to max(factor · live, floor): factor", 1.0, 1e9))
    uncertainty_floor: float = field(default=0.1, metadata=_p(
        "... and floor (small uncertainties fluctuate by large ratios)", 0.0, 1e9))
    min_uncertainty_ratio: float = field(default=0.02, metadata=_p(
        "median uncertainty must be at least this × live: a collapsed Q ensemble (e.g. untrained "
        "heads) disables the uncertainty penalty and hold", 0.0, 1.0))
    max_action_shift: float = field(default=0.0, metadata=_p(
        "largest change of the mean action (any axis) vs the live weights; 0 disables (honest "
        "early finetuning moves it by up to ~1)", 0.0, 2.0))
    seed: int = field(default=0, metadata=_p("generator seed of the gate's plans", 0, 2**31 - 1))

    def __post_init__(self) -> None:
        _require(self.observations >= 1, "gate.observations", self.observations, ">= 1")
        _require(1 <= self.min_observations <= self.observations, "gate.min_observations",
                 self.min_observations, f"1..gate.observations ({self.observations})")
        for name in ("abs_value_band", "rel_value_band", "uncertainty_floor", "max_action_shift"):
            value = getattr(self, name)
            _require(math.isfinite(value) and value >= 0, f"gate.{name}", value, "finite, >= 0")
        _require(math.isfinite(self.uncertainty_factor) and self.uncertainty_factor >= 1.0,
                 "gate.uncertainty_factor", self.uncertainty_factor, "finite, >= 1")
        _require(0.0 <= self.min_uncertainty_ratio <= 1.0, "gate.min_uncertainty_ratio",
                 self.min_uncertainty_ratio, "in [0, 1]")


@dataclass(frozen=True)
class MonitorConfig:
    """When to roll back after a swap (``SwapMonitor``)."""

    window: int = field(default=50, metadata=_p(
        "ticks before a swap that form the baseline", 1, 100000))
    watch: int = field(default=25, metadata=_p(
        "ticks after a swap during which a jump rolls back (and no other swap happens: one "
        "25-step episode, so the live learner's checkpoint of every episode can act)",
        1, 100000))
    min_ticks: int = field(default=10, metadata=_p(
        "ticks after a swap (and of baseline) needed before judging", 1, 100000))
    uncertainty_factor: float = field(default=3.0, metadata=_p(
        "roll back when median uncertainty > max(factor · baseline, floor): factor", 1.0, 1e9))
    uncertainty_floor: float = field(default=0.1, metadata=_p("... and floor", 0.0, 1e9))
    hold_rate_increase: float = field(default=0.3, metadata=_p(
        "roll back when the hold rate rises by more than this (0.3: 30 % more ticks held)",
        0.0, 1.0))

    def __post_init__(self) -> None:
        for name in ("window", "watch", "min_ticks"):
            _require(getattr(self, name) >= 1, f"monitor.{name}", getattr(self, name), ">= 1")
        _require(self.min_ticks <= min(self.window, self.watch), "monitor.min_ticks",
                 self.min_ticks, f"<= window ({self.window}) and watch ({self.watch})")
        _require(math.isfinite(self.uncertainty_factor) and self.uncertainty_factor >= 1.0,
                 "monitor.uncertainty_factor", self.uncertainty_factor, "finite, >= 1")
        _require(math.isfinite(self.uncertainty_floor) and self.uncertainty_floor >= 0,
                 "monitor.uncertainty_floor", self.uncertainty_floor, "finite, >= 0")
        _require(0.0 <= self.hold_rate_increase <= 1.0, "monitor.hold_rate_increase",
                 self.hold_rate_increase, "in [0, 1]")


class ObservationRing:
    """Recent model observations, pushed by the control thread (a reference append under a lock:
    push arrays the caller will not modify afterwards), read by the validator thread."""

    def __init__(self, capacity: int = 64) -> None:
        _require(capacity >= 1, "ObservationRing capacity", capacity, ">= 1")
        self._items: deque[Obs] = deque(maxlen=capacity)
        self._lock = threading.Lock()

    def push(self, obs: Obs) -> None:
        with self._lock:
            self._items.append(obs)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def sample(self, n: int) -> list[Obs]:
        """Up to n observations evenly spread over the ring, oldest first (consecutive ticks are
        nearly identical; spreading covers more of what the robot saw)."""
        with self._lock:
            items = list(self._items)
        if len(items) <= n:
            return items
        picks = np.linspace(0, len(items) - 1, n).round().astype(int)
        return [items[i] for i in picks]


@dataclass(frozen=True)
class PlanStats:
    """One set of weights on the gate's observations."""

    median_value: float
    median_uncertainty: float
    mean_action: list[float]
    max_abs_action: float
    all_finite: bool


@dataclass(frozen=True)
class GateReport:
    passed: bool
    reasons: list[str]
    observations: int
    candidate: PlanStats | None
    live: PlanStats | None
    elapsed_s: float
    deferred: bool = False          # too few real observations yet: try again later

    def to_dict(self) -> dict[str, Any]:
        """Flat numbers for logs and /diagnostics."""
        out: dict[str, Any] = {"passed": self.passed, "deferred": self.deferred,
                               "observations": self.observations,
                               "elapsed_ms": round(self.elapsed_s * 1e3, 1),
                               "reasons": "; ".join(self.reasons)}
        for who, stats in (("candidate", self.candidate), ("live", self.live)):
            for key, value in (asdict(stats) if stats else {}).items():
                out[f"{who}_{key}"] = value
        return out

    def summary(self) -> str:
        if self.deferred or self.candidate is None or self.live is None:
            return "; ".join(self.reasons)
        c, lv = self.candidate, self.live
        verdict = "passed" if self.passed else "refused: " + "; ".join(self.reasons)
        return (f"gate {verdict} ({self.observations} observations, value {c.median_value:.3g} vs "
                f"live {lv.median_value:.3g}, uncertainty {c.median_uncertainty:.3g} vs "
                f"{lv.median_uncertainty:.3g}, {self.elapsed_s * 1e3:.0f} ms)")


def reference_planner(live_model: nn.Module, cfg: FowmConfig) -> Planner:
    """A separate Planner over the live model for the gate: the control thread's planner (its
    warm start, its generator) is never touched; the model's weights are only read."""
    device = next(live_model.parameters()).device
    return Planner(live_model, cfg, generator_for(device, 0), cuda_graph=False)


def plan_stats(planner: Planner, observations: Sequence[Obs], seed: int) -> PlanStats:
    """Plan each observation in eval mode from a fresh warm start, generator seeded seed + i."""
    values, uncertainties, actions = [], [], []
    saved = planner.generator
    try:
        for i, obs in enumerate(observations):
            planner.reset()
            planner.generator = generator_for(planner.device, seed + i)
            result = planner.plan(obs, t0=True, eval_mode=True)
            values.append(result.value)
            uncertainties.append(result.uncertainty)
            actions.append(np.asarray(result.action, dtype=np.float64))
    finally:
        planner.generator = saved
        planner.reset()
    acts = np.stack(actions)
    finite = bool(np.isfinite(acts).all() and np.isfinite(values).all()
                  and np.isfinite(uncertainties).all())
    return PlanStats(float(np.median(values)), float(np.median(uncertainties)),
                     [float(v) for v in acts.mean(0)],
                     float(np.abs(acts).max()) if finite else math.inf, finite)


def gate(candidate: Planner, reference: Planner, observations: Sequence[Obs],
         cfg: GateConfig) -> GateReport:
    """Does the candidate plan the robot's recent observations about as the live weights do?"""
    start = time.perf_counter()
    observations = list(observations)[-cfg.observations:]
    if len(observations) < cfg.min_observations:
        why = (f"only {len(observations)} recent real observations, the gate needs "
               f"{cfg.min_observations}: waiting until the robot has run")
        return GateReport(False, [why], len(observations), None, None, 0.0, deferred=True)
    try:
        cand = plan_stats(candidate, observations, cfg.seed)
    except (FowmError, RuntimeError, ValueError) as err:
        return GateReport(False, [f"the candidate cannot plan: {err}"], len(observations),
                          None, None, time.perf_counter() - start)
    live = plan_stats(reference, observations, cfg.seed)
    reasons = judge(cand, live, cfg)
    return GateReport(not reasons, reasons, len(observations), cand, live,
                      time.perf_counter() - start)


def judge(cand: PlanStats, live: PlanStats, cfg: GateConfig) -> list[str]:
    """Every way the candidate's numbers leave the band (empty: it passes)."""
    if not cand.all_finite:
        return ["non-finite action, value or uncertainty"]
    reasons = []
    if cand.max_abs_action > 1.0:
        reasons.append(f"action {cand.max_abs_action:.3g} outside [-1, 1]")
    if not live.all_finite:
        return [*reasons, "the live weights plan non-finite numbers: no band to compare with"]
    band = cfg.abs_value_band + cfg.rel_value_band * abs(live.median_value)
    shift = abs(cand.median_value - live.median_value)
    if shift > band:
        reasons.append(f"median value {cand.median_value:.4g} is {shift:.3g} from the live "
                       f"weights' {live.median_value:.4g} (band {band:.3g})")
    ceiling = max(cfg.uncertainty_factor * live.median_uncertainty, cfg.uncertainty_floor)
    if cand.median_uncertainty > ceiling:
        reasons.append(f"median uncertainty {cand.median_uncertainty:.4g} above "
                       f"{ceiling:.3g} (live {live.median_uncertainty:.4g})")
    if cand.median_uncertainty < cfg.min_uncertainty_ratio * live.median_uncertainty:
        reasons.append(f"median uncertainty {cand.median_uncertainty:.3g} collapsed below "
                       f"{cfg.min_uncertainty_ratio:g} × live {live.median_uncertainty:.3g} "
                       "(the Q heads agree: the uncertainty penalty and hold would be void)")
    moved = max(abs(c - lv) for c, lv in zip(cand.mean_action, live.mean_action, strict=True))
    if cfg.max_action_shift > 0 and moved > cfg.max_action_shift:
        reasons.append(f"mean action moved by {moved:.3g} (> {cfg.max_action_shift:g}): "
                       f"{[round(a, 2) for a in cand.mean_action]} vs live "
                       f"{[round(a, 2) for a in live.mean_action]}")
    return reasons


class SwapMonitor:
    """After a swap, roll back when the median uncertainty or the hold rate jumps.

    ``tick(uncertainty, held)`` every control tick (uncertainty NaN/None when nothing was planned);
    ``swapped()`` right after a swap freezes the baseline from the last ``window`` ticks;
    ``should_roll_back()`` is True (with ``reason``) once ``min_ticks`` ticks after the swap show
    a jump, within ``watch`` ticks; after ``watch`` ticks the swap is accepted. After rolling back,
    ``rolled_back()`` restores the pre-swap baseline. While ``watching``, swap nothing else in:
    the rollback target must stay the last weights that proved good. Control thread only.
    """

    def __init__(self, cfg: MonitorConfig) -> None:
        self.cfg = cfg
        self._recent: deque[tuple[float, bool]] = deque(maxlen=cfg.window)
        self._baseline: tuple[float | None, float] | None = None    # (median u, hold rate)
        self._after: list[tuple[float, bool]] = []
        self._before: list[tuple[float, bool]] = []
        self.reason = ""

    @property
    def watching(self) -> bool:
        return self._baseline is not None

    def tick(self, uncertainty: float | None, held: bool) -> None:
        u = math.nan if uncertainty is None else float(uncertainty)
        if self._baseline is None:
            self._recent.append((u, bool(held)))
            return
        self._after.append((u, bool(held)))
        if len(self._after) >= self.cfg.watch and not self.should_roll_back():
            self.accept()

    def swapped(self) -> None:
        """Freeze the baseline; without min_ticks ticks of it, no uncertainty baseline (only
        the hold rate, against 0) is judged."""
        before = self._before = list(self._recent)
        enough = len(before) >= self.cfg.min_ticks
        self._baseline = (_median_u(before) if enough else None,
                          _hold_rate(before) if enough else 0.0)
        self._after, self.reason = [], ""

    def should_roll_back(self) -> bool:
        if self._baseline is None or len(self._after) < self.cfg.min_ticks:
            return False
        u_base, hold_base = self._baseline
        after, cfg = self._after[:self.cfg.watch], self.cfg
        hold_after = _hold_rate(after)
        if hold_after - hold_base > cfg.hold_rate_increase:
            self.reason = (f"hold rate rose from {hold_base:.0%} to {hold_after:.0%} in "
                           f"{len(after)} ticks after the swap")
            return True
        u_after = _median_u(after)
        if u_base is not None and u_after is not None:
            limit = max(cfg.uncertainty_factor * u_base, cfg.uncertainty_floor)
            if u_after > limit:
                self.reason = (f"median uncertainty rose from {u_base:.3g} to {u_after:.3g} "
                               f"(limit {limit:.3g}) in {len(after)} ticks after the swap")
                return True
        return False

    def accept(self) -> None:
        """Keep the swap: the ticks since the swap become the baseline of the next one."""
        self._recent.clear()
        self._recent.extend(self._after[-self.cfg.window:])
        self._baseline, self._after = None, []

    def rolled_back(self) -> None:
        """The previous weights are live again: their ticks are the baseline again."""
        self._recent.clear()
        self._recent.extend(self._before)
        self._baseline, self._after = None, []


def _median_u(ticks: Sequence[tuple[float, bool]]) -> float | None:
    values = [u for u, _ in ticks if math.isfinite(u)]
    return float(np.median(values)) if values else None


def _hold_rate(ticks: Sequence[tuple[float, bool]]) -> float:
    return sum(held for _, held in ticks) / len(ticks) if ticks else 0.0
