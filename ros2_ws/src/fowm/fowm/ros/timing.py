"""Control-loop threads with a monotonic deadline, and their tick statistics.

Why a thread and not an rclpy timer: rclpy's MultiThreadedExecutor stalls now and then
(ros2/rclpy#1223, docs/platform.md §1.5). A control loop that lives on its own thread and sleeps
to absolute ``time.monotonic()`` deadlines keeps ticking whatever the executor does (ros2_control's
choice, PR #275); subscriptions only store the latest message for it. No rclpy import here: the
loops are plain Python and tested as such.
"""

from __future__ import annotations

import gc
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tick:
    """One iteration: ``index`` counts ticks, times are time.monotonic() seconds."""

    index: int
    scheduled_s: float
    started_s: float


class TickStats:
    """Rolling statistics of the last ``window`` ticks: lateness (start − schedule), work latency
    (end − start) and deadline misses (work ended after the next slot, or slots were skipped)."""

    def __init__(self, period_s: float | None, window: int = 500) -> None:
        self.period_s = period_s
        self.ticks = 0
        self.misses = 0
        self.skipped = 0
        self._starts: deque[float] = deque(maxlen=window)
        self._late: deque[float] = deque(maxlen=window)
        self._work: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()
        # Called after each tick with (tick, finished_s, missed): a benchmark's per-tick log
        # (fowm.roles times the ticks during weight transfers).
        self.listener: Callable[[Tick, float, bool], None] | None = None

    def record(self, tick: Tick, finished_s: float, skipped: int = 0) -> bool:
        """Record one tick; returns True when it missed its deadline."""
        missed = (self.period_s is not None
                  and finished_s > tick.scheduled_s + self.period_s) or skipped > 0
        with self._lock:
            self.ticks += 1
            self.misses += int(missed)
            self.skipped += skipped
            self._starts.append(tick.started_s)
            self._late.append(tick.started_s - tick.scheduled_s)
            self._work.append(finished_s - tick.started_s)
        if self.listener is not None:
            self.listener(tick, finished_s, missed)
        return missed

    def summary(self) -> dict[str, float]:
        """Rate, jitter, latency percentiles (ms) and miss counts, JSON-ready."""
        with self._lock:
            starts = np.array(self._starts)
            late = np.array(self._late) * 1e3
            work = np.array(self._work) * 1e3
            ticks, misses, skipped = self.ticks, self.misses, self.skipped
        intervals = np.diff(starts) * 1e3 if len(starts) > 1 else np.zeros(0)
        return {
            "ticks": ticks,
            "deadline_misses": misses,
            "skipped_slots": skipped,
            "miss_rate": misses / ticks if ticks else 0.0,
            "rate_hz": 1e3 / float(intervals.mean()) if len(intervals) else 0.0,
            "period_jitter_ms": float(intervals.std()) if len(intervals) else 0.0,
            "lateness_ms_median": _pct(late, 50),
            "lateness_ms_max": float(late.max()) if len(late) else 0.0,
            "latency_ms_median": _pct(work, 50),
            "latency_ms_p95": _pct(work, 95),
            "latency_ms_max": float(work.max()) if len(work) else 0.0,
        }


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else 0.0


def freeze_startup_heap() -> None:
    """Move every object alive now into the collector's permanent generation (gc.freeze).

    A full collection holds the GIL while it scans every tracked object: with torch, rclpy and
    MuJoCo loaded that is 0.13 s in a planner process (benchmarks/gc_pause.py) and ~0.2 s in a
    bigger one, about a 160 ms control period or more, and it lands on whichever thread
    happens to allocate. What exists when a control loop starts (modules, models, nodes) lives
    as long as the process, so later collections need not scan it; what is made after this
    point is collected as before."""
    gc.freeze()


class LoopThread:
    """A loop on its own thread: start, stop, is_running; subclasses write ``_run``."""

    def __init__(self, name: str, fn: Callable[[Tick], None], stats: TickStats) -> None:
        self.stats = stats
        self._fn = fn
        # Runs on the loop thread after the last tick: for resources bound to that thread
        # (MuJoCo's EGL context can only be released where it is current).
        self.on_exit: Callable[[], None] | None = None
        # False once the owner is shutting down (e.g. a signal already invalidated the ROS
        # context): the loop then ends quietly instead of failing on a dead publisher.
        self.alive: Callable[[], bool] = lambda: True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    def start(self) -> None:
        freeze_startup_heap()
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ask the loop to end and join it (the current tick finishes first)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    @property
    def is_running(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    def _main(self) -> None:
        try:
            self._run()
        except Exception:
            if self.alive():
                raise
        finally:
            if self.on_exit is not None:
                self.on_exit()

    def _run(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class FixedRateLoop(LoopThread):
    """Calls ``fn`` every ``period_s`` on absolute monotonic deadlines (no drift). A tick that
    overruns skips the slots it covered instead of bursting to catch up; both count as misses."""

    def __init__(self, period_s: float, fn: Callable[[Tick], None], name: str = "control") -> None:
        if not (math.isfinite(period_s) and period_s > 0):
            msg = f"period_s={period_s!r} is invalid: expected a finite period > 0 s"
            raise ValueError(msg)
        super().__init__(name, fn, TickStats(period_s))
        self.period_s = period_s

    def _run(self) -> None:
        index = 0
        scheduled = time.monotonic()
        while not self._stop.is_set() and self.alive():
            delay = scheduled - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            tick = Tick(index, scheduled, time.monotonic())
            self._fn(tick)
            finished = time.monotonic()
            # The next slot is the first one still ahead of us; slots passed during the work are
            # skipped (a controller must act on fresh data, not replay late ticks).
            slots = max(1, math.ceil((finished - scheduled) / self.period_s))
            self.stats.record(tick, finished, skipped=slots - 1)
            scheduled += slots * self.period_s
            index += 1


class TriggeredLoop(LoopThread):
    """Calls ``fn`` whenever ``trigger`` is set (lock-step: a new observation arrived), and at
    least every ``idle_s`` so the caller can still report and hold while nothing arrives."""

    def __init__(self, trigger: threading.Event, fn: Callable[[Tick], None],
                 idle_s: float = 0.5, name: str = "control") -> None:
        super().__init__(name, fn, TickStats(None))
        self._trigger = trigger
        self._idle_s = idle_s

    def _run(self) -> None:
        index = 0
        while not self._stop.is_set() and self.alive():
            self._trigger.wait(self._idle_s)
            if self._stop.is_set():
                break
            self._trigger.clear()
            now = time.monotonic()
            tick = Tick(index, now, now)
            self._fn(tick)
            self.stats.record(tick, time.monotonic())
            index += 1
