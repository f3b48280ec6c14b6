"""The behavioural gate and the post-swap monitor (fowm_core.runtime.gate) on real checkpoints:
consecutive checkpoints of an honest finetuning run on reach bags pass; the fault-injection
campaign's weights (reward head biased one way, random weights, weights ×20, an untrained model)
are refused, each for a reason the report names. The whole trust pipeline runs on files written by
save_agent: signed announcement → trusted directory → bytes + SHA-256 → model → gate."""

from __future__ import annotations

import math
import re
import threading
import time

import numpy as np
import pytest
import torch
from helpers import weights as hw

from fowm_core.jobs import workflows
from fowm_core.learning.checkpoints import save_agent
from fowm_core.model import WorldModel
from fowm_core.planner.mppi import Planner
from fowm_core.runtime.gate import (
    GateConfig,
    MonitorConfig,
    ObservationRing,
    PlanStats,
    SwapMonitor,
    gate,
    judge,
    reference_planner,
)
from fowm_core.runtime.origin import TrustPolicy
from fowm_core.runtime.trust import ROLE_LEARNER, generate_key, load_key, signed

LIVE_STEP = 250


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, one_thread) -> hw.Run:
    return hw.honest_run(tmp_path_factory.mktemp("reach") / "bags", steps=300)


@pytest.fixture(scope="module")
def observations(run: hw.Run) -> list[dict[str, np.ndarray]]:
    ring = ObservationRing(64)
    for obs in run.observations:              # what the control thread would have pushed
        ring.push(obs)
    return ring.sample(GateConfig().observations)


def _gate(run: hw.Run, candidate: WorldModel, observations, live_step: int = LIVE_STEP,
          cfg: GateConfig | None = None):
    live = run.snapshots[live_step]
    return gate(Planner(candidate, run.cfg, torch.Generator()),
                reference_planner(live, run.cfg), observations, cfg or GateConfig())


# -- the observation ring ------------------------------------------------------------------------
def test_the_ring_keeps_references_bounded_and_samples_spread_out() -> None:
    ring = ObservationRing(capacity=10)
    items = [{"state": np.full(3, i, dtype=np.float32)} for i in range(25)]
    for obs in items:
        ring.push(obs)
    assert len(ring) == 10
    picked = ring.sample(4)
    assert [int(o["state"][0]) for o in picked] == [15, 18, 21, 24]
    assert picked[-1] is items[-1]                      # a reference, never a copy
    assert ring.sample(50) == items[15:]


def test_the_ring_is_safe_to_push_while_the_validator_samples() -> None:
    ring, stop = ObservationRing(capacity=32), threading.Event()

    def control() -> None:
        i = 0
        while not stop.is_set():
            ring.push({"state": np.array([i], dtype=np.float32)})
            i += 1

    pusher = threading.Thread(target=control, daemon=True)
    pusher.start()
    try:
        for _ in range(500):
            got = [int(o["state"][0]) for o in ring.sample(8)]
            assert got == sorted(got)
    finally:
        stop.set()
        pusher.join(2.0)


# -- honest checkpoints pass, through the whole trust pipeline -----------------------------------
@pytest.mark.parametrize(("live", "candidate"), [(200, 225), (225, 250), (250, 275),
                                                 (275, 300), (200, 250), (250, 300)])
def test_honest_consecutive_checkpoints_pass(run, observations, tmp_path, live,
                                             candidate) -> None:
    ckpt_dir = tmp_path / "checkpoints"
    key = load_key(generate_key(tmp_path / "key"))
    path = ckpt_dir / f"step_{candidate:08d}.safetensors"
    info = save_agent(path, run.snapshots[candidate], run.cfg, step=candidate, metrics={})
    body = signed(key, path=str(path), sha256=info.sha256, step=candidate, task="reach",
                  obs_mode="state", role=ROLE_LEARNER, sender="fowm_learner")
    policy = TrustPolicy(ckpt_dir, 1 << 24, key)
    ann = policy.check_announcement(body, step_floor=live, task="reach", obs_mode="state")
    trusted = policy.read_checkpoint(ann, run.cfg)
    report = _gate(run, trusted.model, observations, live_step=live)
    assert report.passed, report.summary()
    assert report.observations == 8 and report.candidate.all_finite
    assert report.candidate.max_abs_action <= 1.0


# -- the campaign's attacks fail -----------------------------------------------------------------
@pytest.mark.parametrize(("build", "why"), [
    (lambda run: hw.biased_reward(run.snapshots[LIVE_STEP], 1.0), "median value"),
    (lambda run: hw.biased_reward(run.snapshots[LIVE_STEP], 0.1), "median value"),
    (lambda run: hw.biased_reward(hw.fresh(run.cfg), 1.0), "collapsed"),   # the weights
    (lambda run: hw.random_weights(run.snapshots[LIVE_STEP]), "median uncertainty .* above"),
    (lambda run: hw.scaled(run.snapshots[LIVE_STEP], 20.0), "median uncertainty .* above"),
    (lambda run: hw.fresh(run.cfg), "collapsed"),
], ids=["reward-biased", "reward-biased-mildly", "untrained-reward-biased", "random", "x20",
        "untrained"])
def test_the_campaigns_weights_are_refused(run, observations, build, why: str) -> None:
    report = _gate(run, build(run), observations)
    assert not report.passed and not report.deferred
    assert any(re.search(why, r) for r in report.reasons), report.reasons
    numbers = report.to_dict()
    assert numbers["passed"] is False and math.isfinite(numbers["live_median_value"])


def test_a_reward_biased_model_really_drives_the_arm_one_way(run, observations) -> None:
    """The attack is real: without the gate its plans push along (−1, +1, +1)."""
    report = _gate(run, hw.biased_reward(hw.fresh(run.cfg), 1.0), observations)
    direction = np.asarray(hw.ATTACK_DIRECTION)
    assert float(np.dot(report.candidate.mean_action, direction)) > 1.0
    assert abs(float(np.dot(report.live.mean_action, direction))) < 1.0


def test_the_optional_action_shift_check_names_the_shift(run, observations) -> None:
    model = hw.biased_reward(run.snapshots[LIVE_STEP], 1.0)
    report = _gate(run, model, observations, cfg=GateConfig(max_action_shift=0.3))
    assert any("mean action moved" in r for r in report.reasons)
    assert not any("mean action moved" in r for r in _gate(run, model, observations).reasons)


# -- how the gate plans --------------------------------------------------------------------------
def test_the_gate_is_deterministic_and_leaves_the_control_planner_alone(run,
                                                                       observations) -> None:
    live = run.snapshots[LIVE_STEP]
    control = Planner(live, run.cfg, torch.Generator().manual_seed(11))
    control.plan(observations[0], t0=True, eval_mode=True)
    warm, rng_state = control._prev_mean.clone(), control.generator.get_state()
    candidate = Planner(run.snapshots[275], run.cfg, torch.Generator().manual_seed(5))
    first = gate(candidate, reference_planner(live, run.cfg), observations, GateConfig())
    second = gate(candidate, reference_planner(live, run.cfg), observations, GateConfig())
    assert first.candidate == second.candidate and first.live == second.live
    assert torch.equal(control._prev_mean, warm)
    assert torch.equal(control.generator.get_state(), rng_state)
    assert candidate._prev_mean is None                     # handed over with no warm start
    assert int(candidate.generator.initial_seed()) == 5     # its own generator is put back


def test_too_few_real_observations_defer_the_candidate(run, observations) -> None:
    report = _gate(run, run.snapshots[275], observations[:3])
    assert report.deferred and not report.passed
    assert "waiting until the robot has run" in report.summary()


def test_a_candidate_that_cannot_plan_is_refused_not_raised(run, observations) -> None:
    report = _gate(run, run.snapshots[275], [{"rgb": np.zeros(3)}] * 8)
    assert not report.passed and "cannot plan" in report.reasons[0]


def _stats(value=-1.0, u=0.01, action=(0.0, 0.0, 0.0), finite=True, max_abs=0.5) -> PlanStats:
    return PlanStats(value, u, list(action), max_abs, finite)


def test_judge_applies_each_band_at_its_edge() -> None:
    cfg, live = GateConfig(), _stats()
    band = cfg.abs_value_band + cfg.rel_value_band * 1.0
    assert judge(_stats(value=-1.0 + band * 0.999), live, cfg) == []
    assert "median value" in judge(_stats(value=-1.0 - band * 1.001), live, cfg)[0]
    assert judge(_stats(u=cfg.uncertainty_floor), live, cfg) == []         # the floor
    live_u = _stats(u=0.1)
    assert judge(_stats(u=0.4), live_u, cfg) == []                          # factor 4
    assert "above" in judge(_stats(u=0.41), live_u, cfg)[0]
    assert "collapsed" in judge(_stats(u=0.0019), live_u, cfg)[0]
    assert judge(_stats(u=0.0), _stats(u=0.0), cfg) == []       # both untrained: no collapse
    assert "non-finite" in judge(_stats(finite=False), live, cfg)[0]
    assert "outside [-1, 1]" in judge(_stats(max_abs=1.5), live, cfg)[0]
    assert "live weights plan non-finite" in judge(_stats(), _stats(finite=False), cfg)[0]


def test_the_gate_is_cheap_with_the_cpu_preset_on_one_thread() -> None:
    """What the background validator pays per candidate: 8 observations, both weights, on the
    one torch thread a background thread should use beside the control thread (two threads
    on 2 busy cores are slower: OpenMP barriers)."""
    cfg = workflows.preset_for("cpu", "reach", "state")
    torch.manual_seed(0)
    live, cand = WorldModel(cfg.model).eval(), WorldModel(cfg.model).eval()
    obs = [{"state": np.linspace(-0.5, 0.5, cfg.model.state_dim).astype(np.float32) * k}
           for k in np.linspace(0.5, 1.5, 8)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        report = gate(Planner(cand, cfg, torch.Generator()), reference_planner(live, cfg), obs,
                      GateConfig())
        elapsed = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    assert report.observations == 8
    assert elapsed < 5.0, f"gate took {elapsed:.2f} s"      # ~0.2 s; generous under load


# -- after the swap ------------------------------------------------------------------------------
def _feed(monitor: SwapMonitor, n: int, u: float, held: bool = False) -> None:
    for _ in range(n):
        monitor.tick(u, held)


def test_a_jump_in_uncertainty_after_a_swap_rolls_back() -> None:
    monitor = SwapMonitor(MonitorConfig(window=20, watch=30, min_ticks=5,
                                        uncertainty_factor=3.0, uncertainty_floor=0.05))
    _feed(monitor, 20, 0.04)
    monitor.swapped()
    _feed(monitor, 4, 0.5)
    assert not monitor.should_roll_back()                   # fewer than min_ticks
    _feed(monitor, 1, 0.5)
    assert monitor.should_roll_back() and "uncertainty rose from 0.04 to 0.5" in monitor.reason
    monitor.rolled_back()
    assert not monitor.watching
    monitor.swapped()                                       # the pre-swap baseline is back
    _feed(monitor, 5, 0.13)
    assert monitor.should_roll_back()


def test_a_jump_in_holds_after_a_swap_rolls_back() -> None:
    monitor = SwapMonitor(MonitorConfig(window=20, watch=30, min_ticks=10,
                                        hold_rate_increase=0.3))
    _feed(monitor, 18, 0.01)
    _feed(monitor, 2, 0.01, held=True)                      # 10 % held before
    monitor.swapped()
    _feed(monitor, 7, 0.01)
    _feed(monitor, 3, math.nan, held=True)                  # 30 % held after: +20 %
    assert not monitor.should_roll_back()
    _feed(monitor, 2, math.nan, held=True)                  # 5/12 = 42 %: +32 %
    assert monitor.should_roll_back() and "hold rate rose from 10% to 42%" in monitor.reason


def test_a_steady_swap_is_accepted_after_the_watch_and_becomes_the_baseline() -> None:
    monitor = SwapMonitor(MonitorConfig(window=20, watch=30, min_ticks=5))
    _feed(monitor, 20, 0.04)
    monitor.swapped()
    _feed(monitor, 29, 0.09)                                # below max(3 × 0.04, 0.1)
    assert monitor.watching and not monitor.should_roll_back()
    _feed(monitor, 1, 0.09)
    assert not monitor.watching                             # accepted
    monitor.swapped()                                       # the next swap compares with 0.09
    _feed(monitor, 5, 0.25)
    assert not monitor.should_roll_back()
    _feed(monitor, 5, 0.3)
    assert monitor.should_roll_back()


def test_without_a_baseline_only_the_hold_rate_is_judged() -> None:
    monitor = SwapMonitor(MonitorConfig(window=20, watch=30, min_ticks=5))
    _feed(monitor, 3, 0.01)                                 # too little to be a baseline
    monitor.swapped()
    _feed(monitor, 10, 5.0)
    assert not monitor.should_roll_back()
    _feed(monitor, 10, None, held=True)
    assert monitor.should_roll_back() and "hold rate" in monitor.reason


def test_nothing_rolls_back_without_a_swap() -> None:
    monitor = SwapMonitor(MonitorConfig())
    _feed(monitor, 200, 9.0, held=True)
    assert not monitor.watching and not monitor.should_roll_back()
