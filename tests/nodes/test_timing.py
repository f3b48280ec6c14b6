"""fowm.ros.timing: the monotonic-deadline control loop (no ROS involved)."""

from __future__ import annotations

import gc
import threading
import time
import weakref

import numpy as np
import pytest
import torch
from fowm.ros.timing import FixedRateLoop, Tick, TriggeredLoop

from fowm_core import config
from fowm_core.model.world_model import WorldModel
from fowm_core.planner.mppi import Planner


def _wait(cond: object, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.005)
    return False


def test_ticks_follow_absolute_deadlines() -> None:
    ticks: list[Tick] = []
    loop = FixedRateLoop(0.02, ticks.append)
    loop.start()
    assert _wait(lambda: len(ticks) >= 10)
    loop.stop()
    # Scheduled times are whole periods after the first (no drift; a late wake-up on a loaded
    # machine may skip a slot, never shift the grid).
    for tick in ticks:
        slots = (tick.scheduled_s - ticks[0].scheduled_s) / 0.02
        assert slots == pytest.approx(round(slots), abs=1e-6)
        assert tick.started_s >= tick.scheduled_s
    assert loop.stats.summary()["ticks"] >= 10


def test_an_overrun_skips_slots_and_counts_a_miss() -> None:
    calls: list[int] = []

    def work(tick: Tick) -> None:
        calls.append(tick.index)
        if tick.index == 2:
            time.sleep(0.1)                # five periods of work

    loop = FixedRateLoop(0.02, work)
    loop.start()
    assert _wait(lambda: len(calls) >= 6)
    loop.stop()
    summary = loop.stats.summary()
    assert summary["deadline_misses"] >= 1
    assert summary["skipped_slots"] >= 3   # no burst of late ticks to catch up


def test_triggered_loop_runs_on_each_trigger_and_on_idle() -> None:
    trigger = threading.Event()
    calls: list[Tick] = []
    loop = TriggeredLoop(trigger, calls.append, idle_s=0.05)
    loop.on_exit = lambda: calls.append(Tick(-1, 0.0, 0.0))
    loop.start()
    trigger.set()
    assert _wait(lambda: len(calls) >= 3)   # the trigger, then idle ticks
    loop.stop()
    assert calls[-1].index == -1            # on_exit ran on the loop thread at the end


def test_loop_stops_quietly_when_its_owner_is_gone() -> None:
    alive = threading.Event()
    alive.set()

    def work(tick: Tick) -> None:
        if tick.index == 3:
            alive.clear()
            raise RuntimeError("publisher's context is invalid")

    loop = FixedRateLoop(0.01, work)
    loop.alive = alive.is_set
    loop.start()
    assert _wait(lambda: not loop.is_running)


def test_bad_period_is_refused() -> None:
    with pytest.raises(ValueError, match="period_s"):
        FixedRateLoop(0.0, lambda tick: None)


def test_starting_a_loop_takes_the_start_up_heap_out_of_later_collections() -> None:
    """A full collection of the start-up heap stops every thread for ~0.1-0.2 s (longer than a
    control period, benchmarks/gc_pause.py); once a loop starts, that heap is frozen and later
    collections walk only what was made since."""
    model = [[i] for i in range(1000)]            # start-up state: lives as long as the process
    gc.unfreeze()
    try:
        assert _collected(model)
        loop = FixedRateLoop(0.02, lambda tick: None)
        loop.start()
        loop.stop()
        made_later = [[i] for i in range(10)]
        assert not _collected(model) and _collected(made_later)
        assert gc.get_freeze_count() >= len(model)
    finally:
        gc.unfreeze()


def test_frozen_start_up_weights_are_still_freed_when_a_swap_replaces_them() -> None:
    """The collector never frees frozen garbage cycles, so the start-up model and planner must
    leave by reference counting alone once a hot swap drops them (the swapper keeps only the
    previous pair, for a rollback)."""
    cfg = config.preset("cpu", task="lift")
    model = WorldModel(cfg.model)
    planner = Planner(model, cfg, torch.Generator().manual_seed(0))
    for t0 in (True, False):                      # warm start, scorer buffers: all made
        planner.plan({"state": np.zeros(cfg.model.state_dim, np.float32)}, t0=t0, eval_mode=False)
    gone = weakref.ref(model), weakref.ref(planner)
    gc.unfreeze()
    try:
        gc.freeze()
        del model, planner
        assert all(ref() is None for ref in gone)
    finally:
        gc.unfreeze()


def _collected(obj: object) -> bool:
    """Whether the cyclic collector walks ``obj`` (frozen objects are in no generation)."""
    return any(o is obj for o in gc.get_objects())
