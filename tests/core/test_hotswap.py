"""Only trusted weights act (fowm_core.runtime.hotswap): announcements are checked before they are
queued, checkpoints are read through the trust policy and gated against the live weights on
recent real observations, swaps happen between ticks, and a bad swap rolls back for good."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import weights as hw

from fowm_core.errors import FowmError
from fowm_core.learning import checkpoints
from fowm_core.planner.mppi import Planner
from fowm_core.runtime import hotswap, trust
from fowm_core.runtime.gate import MonitorConfig
from fowm_core.runtime.hotswap import HotSwapper, Weights
from fowm_core.runtime.origin import TrustPolicy

LIVE, NEXT, LATER = 50, 75, 100


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, one_thread) -> hw.Run:
    return hw.honest_run(tmp_path_factory.mktemp("reach") / "bags", steps=LATER)


class Lab:
    """A trusted directory with signed checkpoints of the honest run, and a running planner."""

    def __init__(self, root: Path, run: hw.Run) -> None:
        self.run, self.cfg = run, run.cfg
        self.dir = root / "checkpoints"
        self.key = trust.load_key(trust.generate_key(root / "lab.key"))
        self.logs: list[tuple[str, str]] = []
        self.refusals: list[tuple[str, str, str]] = []
        live = self.save(run.snapshots[LIVE], LIVE)
        self.planner = Planner(run.snapshots[LIVE], self.cfg, torch.Generator().manual_seed(5))
        self.swapper = HotSwapper(
            self.cfg, Weights.of_checkpoint(live), run.snapshots[LIVE],
            TrustPolicy(self.dir, 1 << 24, self.key), monitor_cfg=MonitorConfig(
                window=10, watch=10, min_ticks=5), retry_s=0.05,
            log=lambda level, text: self.logs.append((level, text)),
            on_refused=lambda *args: self.refusals.append(args))

    def save(self, model, step: int, directory: Path | None = None) -> Path:
        path = (directory or self.dir) / f"step_{step:08d}.safetensors"
        checkpoints.save_agent(path, model, self.cfg, step=step, metrics={})
        return path

    def body(self, path: Path | str, step: int, key: bytes | None = None, **over) -> dict:
        sha = over.pop("sha256", None) or hashlib.sha256(Path(path).read_bytes()).hexdigest()
        fields = {"path": str(path), "sha256": sha, "step": step, "task": self.cfg.task,
                  "obs_mode": "state", "role": trust.ROLE_LEARNER, "sender": "fowm_learner/1",
                  **over}
        return trust.signed(key if key is not None else self.key, **fields)

    def see(self, n: int = 16) -> None:
        """The control thread's pushes: real observations of the robot."""
        for obs in self.run.observations[:n]:
            self.swapper.ring.push(obs)

    def settle(self) -> None:
        assert self.swapper.wait_idle(60.0)


@pytest.fixture
def lab(tmp_path: Path, run: hw.Run) -> Iterator[Lab]:
    lab = Lab(tmp_path, run)
    yield lab
    lab.swapper.close()


def _obs(run: hw.Run) -> dict[str, np.ndarray]:
    return run.observations[0]


def test_an_honest_signed_checkpoint_is_gated_and_swapped_between_ticks(lab: Lab) -> None:
    sw, planner = lab.swapper, lab.planner
    planner.plan(_obs(lab.run), t0=True, eval_mode=True)         # a warm start to carry over
    lab.see()
    path = lab.save(lab.run.snapshots[NEXT], NEXT)
    assert sw.swap(planner) is None                              # nothing ready: tick unchanged
    assert sw.offer(lab.body(path, NEXT))
    lab.settle()
    cand = sw.swap(planner)
    assert cand is not None and cand.weights.step == NEXT, sw.stats.refused
    assert cand.report is not None and cand.report.passed and cand.report.observations == 8
    assert sw.live == cand.weights and sw.floor == NEXT and sw.stats.swaps == 1
    assert torch.equal(cand.planner._prev_mean, planner._prev_mean)
    assert cand.planner.generator is planner.generator
    assert np.isfinite(cand.planner.plan(_obs(lab.run), t0=False, eval_mode=True).action).all()
    assert any("passed" in text for _, text in lab.logs)
    assert not sw.offer(lab.body(path, NEXT))                    # the live weights: a no-op
    assert not lab.refusals


def test_too_few_real_observations_defer_the_candidate_until_the_robot_ran(lab: Lab) -> None:
    sw = lab.swapper
    sw.offer(lab.body(lab.save(lab.run.snapshots[NEXT], NEXT), NEXT))
    deadline = 200
    while sw.stats.deferred < 2 and deadline:
        deadline -= 1
        time.sleep(0.05)
    assert sw.stats.deferred >= 2 and not sw.stats.refused       # waiting, not refused
    assert sw.swap(lab.planner) is None
    lab.see()
    lab.settle()
    assert sw.swap(lab.planner) is not None


@pytest.mark.parametrize(("attack", "stage", "why"), [
    ("unsigned", "announcement", "unsigned"),
    ("wrong key", "announcement", "does not verify"),
    ("planner role", "announcement", "role 'planner-live'"),
    ("rollback", "announcement", "not above 50"),
    ("other task", "announcement", "task='lift'"),
    ("outside", "checkpoint", "outside the trusted directory"),
    ("symlink to /dev/zero", "checkpoint", "outside the trusted directory"),
    ("fifo", "checkpoint", "not a regular file"),
    ("replaced", "checkpoint", "changed after the announcement"),
    ("x20", "gate", "median uncertainty .* above"),
    ("reward-biased", "gate", "median value"),
    ("untrained", "gate", "collapsed"),
])
def test_every_attack_is_refused_at_its_layer_and_the_live_weights_stay(
        lab: Lab, tmp_path: Path, attack: str, stage: str, why: str) -> None:
    sw, run, snap = lab.swapper, lab.run, lab.run.snapshots[NEXT]
    lab.see()
    live = sw.live
    if attack == "unsigned":
        body = lab.body(lab.save(snap, NEXT), NEXT)
        del body[trust.SIGNATURE]
    elif attack == "wrong key":
        body = lab.body(lab.save(snap, NEXT), NEXT, key=os.urandom(32))
    elif attack == "planner role":
        body = lab.body(lab.save(snap, NEXT), NEXT, role=trust.ROLE_PLANNER_LIVE)
    elif attack == "rollback":
        body = lab.body(lab.save(run.snapshots[25], 25), 25)
    elif attack == "other task":
        body = lab.body(lab.save(snap, NEXT), NEXT, task="lift")
    elif attack == "outside":
        (tmp_path / "elsewhere").mkdir()
        body = lab.body(lab.save(snap, NEXT, directory=tmp_path / "elsewhere"), NEXT)
    elif attack == "symlink to /dev/zero":
        (lab.dir / "zero.safetensors").symlink_to("/dev/zero")
        body = lab.body(lab.dir / "zero.safetensors", NEXT, sha256="ab" * 32)
    elif attack == "fifo":
        os.mkfifo(lab.dir / "w.safetensors")            # opening it to read would block forever
        body = lab.body(lab.dir / "w.safetensors", NEXT, sha256="ab" * 32)
    elif attack == "replaced":
        path = lab.save(snap, NEXT)
        body = lab.body(path, NEXT)
        lab.save(hw.scaled(snap, 2.0), NEXT)            # rewritten after the announcement
    else:
        model = {"x20": lambda: hw.scaled(snap, 20.0),
                 "reward-biased": lambda: hw.biased_reward(run.snapshots[LIVE], 1.0),
                 "untrained": lambda: hw.fresh(run.cfg)}[attack]()
        body = lab.body(lab.save(model, NEXT), NEXT)
    sw.offer(body)
    lab.settle()
    assert sw.swap(lab.planner) is None and sw.live == live and sw.floor == LIVE
    assert [s for s, _, _ in lab.refusals] == [stage], lab.refusals
    assert sw.stats.refused_by_stage == {stage: 1}
    assert re.search(why, lab.refusals[0][2]), lab.refusals[0][2]


def test_without_a_policy_every_offer_is_refused_with_the_reason(lab: Lab, run) -> None:
    seen: list[tuple[str, str, str]] = []
    sw = HotSwapper(run.cfg, lab.swapper.live, run.snapshots[LIVE], None,
                    on_refused=lambda *a: seen.append(a), disabled_reason="hot-swap disabled: x")
    try:
        assert not sw.offer(lab.body(lab.save(run.snapshots[NEXT], NEXT), NEXT))
        assert seen and seen[0][2] == "hot-swap disabled: x"
    finally:
        sw.close()


def test_a_jump_after_a_swap_rolls_back_for_good(lab: Lab) -> None:
    sw, planner = lab.swapper, lab.planner
    lab.see()
    for _ in range(10):
        sw.monitor.tick(0.01, False)                      # the baseline before the swap
    path = lab.save(lab.run.snapshots[NEXT], NEXT)
    sw.offer(lab.body(path, NEXT))
    lab.settle()
    cand = sw.swap(planner)
    assert cand is not None and sw.monitor.watching
    # While the monitor watches, a newer checkpoint waits: the rollback target stays the last good.
    sw.offer(lab.body(lab.save(lab.run.snapshots[LATER], LATER), LATER))
    lab.settle()
    assert sw.swap(cand.planner) is None
    for _ in range(5):
        sw.monitor.tick(1.0, False)                       # uncertainty jumps 100×
    assert sw.monitor.should_roll_back() and "uncertainty" in sw.monitor.reason
    back = sw.roll_back(cand.planner)
    assert back is not None and back[1] is planner and back[0].step == LIVE
    assert sw.live.step == LIVE and sw.floor == NEXT and not sw.monitor.watching
    assert sw.stats.rollbacks[0][0] == str(path)
    assert sw.roll_back(planner) is None                  # nothing further back
    assert not sw.offer(lab.body(path, NEXT))             # the bad checkpoint cannot come back
    assert "not above 75" in lab.refusals[-1][2]
    # The newer candidate was gated against NEXT (no longer live): it is gated again, then swaps.
    assert sw.swap(planner) is None
    lab.settle()
    again = sw.swap(planner)
    assert again is not None and again.weights.step == LATER and again.reference_sha == \
        Weights.of_checkpoint(lab.dir / f"step_{LIVE:08d}.safetensors").sha256


def test_the_newest_offer_wins(lab: Lab) -> None:
    sw = lab.swapper
    lab.see()
    for step in (NEXT, LATER):
        sw.offer(lab.body(lab.save(lab.run.snapshots[step], step), step))
    lab.settle()
    cand = sw.swap(lab.planner)
    assert cand is not None and cand.weights.step in (NEXT, LATER)
    assert sw.stats.swaps == 1


def test_offers_parse_and_the_planners_own_live_messages_are_ignored(lab: Lab) -> None:
    w = Weights("/x/step_1.safetensors", "ab" * 32, 7)
    body = {"path": w.path, "sha256": w.sha256, "step": 7}
    assert hotswap.parse_offer(json.dumps(body)) == body
    live = hotswap.live_message(lab.key, w, lab.cfg, swaps=2, node="fowm_planner",
                                sender="fowm_planner/1")
    assert hotswap.parse_offer(live) is None
    assert trust.authentic_live(lab.key, json.loads(live))
    assert not trust.authentic_live(lab.key, json.loads(w.announcement(live=True).to_json()))
    with pytest.raises(FowmError, match="lacks"):
        hotswap.parse_offer('{"sha256": "x"}')
    with pytest.raises(FowmError, match="not JSON"):
        hotswap.parse_offer("step 4")


def test_the_validator_survives_any_failure_and_a_dead_one_is_restarted(
        lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    sw = lab.swapper
    lab.see()
    real = sw._validate
    monkeypatch.setattr(sw, "_validate", lambda ann: [][1])           # an unexpected bug
    sw.offer(lab.body(lab.save(lab.run.snapshots[NEXT], NEXT), NEXT))
    lab.settle()
    assert "IndexError" in sw.stats.refused[-1][1] and sw._thread.is_alive()
    assert sw.stats.refused_by_stage == {"error": 1}

    def die(ann: object) -> None:
        raise SystemExit                   # escapes every handler: the thread ends
    monkeypatch.setattr(sw, "_validate", die)
    later = lab.save(lab.run.snapshots[LATER], LATER)
    sw.offer(lab.body(later, LATER))
    sw._thread.join(10.0)
    assert not sw._thread.is_alive()
    monkeypatch.setattr(sw, "_validate", real)
    assert sw.ensure_running() and sw.stats.restarts == 1
    assert not sw.ensure_running()                                     # alive: nothing to do
    sw.offer(lab.body(later, LATER))
    lab.settle()
    assert sw.swap(lab.planner) is not None


def test_a_logger_that_raises_does_not_stop_the_validator(lab: Lab, run) -> None:
    def log(level: str, text: str) -> None:
        raise ValueError("Logger severity cannot be changed between calls.")

    sw = HotSwapper(run.cfg, lab.swapper.live, run.snapshots[LIVE],
                    TrustPolicy(lab.dir, 1 << 24, lab.key), log=log)
    try:
        for obs in run.observations:
            sw.ring.push(obs)
        sw.offer(lab.body(lab.dir / "missing.safetensors", NEXT, sha256="ab" * 32))
        assert sw.wait_idle(10.0) and sw._thread.is_alive()
        sw.offer(lab.body(lab.save(run.snapshots[NEXT], NEXT), NEXT))
        assert sw.wait_idle(60.0) and sw.swap(lab.planner) is not None
    finally:
        sw.close()


def test_the_validator_thread_plans_with_one_torch_thread_and_leaves_the_callers(
        lab: Lab) -> None:
    before = torch.get_num_threads()
    seen: list[int] = []
    real = lab.swapper._validate

    def spy(ann):
        seen.append(torch.get_num_threads())
        return real(ann)
    lab.swapper._validate = spy
    lab.see()
    lab.swapper.offer(lab.body(lab.save(lab.run.snapshots[NEXT], NEXT), NEXT))
    lab.settle()
    assert seen == [1] and torch.get_num_threads() == before
