"""What keeps a node alive whatever arrives: refused inputs, future stamps, supervised threads.

A subscription callback that raises ends rclpy's spin, and with it the whole process (every node
of a one-process stack); a worker thread that raises ends silently. So nodes wrap each callback
with ``InputGuard.guard``: a payload the node cannot use is refused, counted per topic and logged
at most once per ``period_s`` per topic (one warning call site: rclpy refuses a call site whose
severity changes). ``InputGuard.future`` refuses stamps ahead of the node's clock, which would
otherwise poison pairing queues and "newest observation" logic. ``SupervisedThread`` restarts a
worker that died of an exception. Counters go to each node's /diagnostics status (``values()``).
"""

from __future__ import annotations

import json
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

UNSET_CLOCK_NS = 0     # a sim-time clock before its first /clock message reads 0


class InputGuard:
    """Refused-input counters and a throttled report, for one node (thread-safe)."""

    def __init__(self, node: Any, max_future_s: float = 0.5, period_s: float = 5.0) -> None:
        self._node = node
        self.max_future_ns = round(max_future_s * 1e9)
        self.period_s = period_s
        self.refused: dict[str, int] = {}
        self.future_stamps = 0
        self.last = ""
        self._last_log: dict[str, float] = {}
        self._lock = threading.Lock()

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.refused.values())

    def refuse(self, topic: str, why: str) -> None:
        """Count one refused input on ``topic`` and report it (throttled per topic)."""
        now = time.monotonic()
        with self._lock:
            count = self.refused[topic] = self.refused.get(topic, 0) + 1
            self.last = f"{topic}: {why}"
            due = now - self._last_log.get(topic, -1e9) >= self.period_s
            if due:
                self._last_log[topic] = now
        if due:
            self._node.get_logger().warning(
                f"refused input on {topic} ({count} so far): {why}")

    def future(self, topic: str, stamp_ns: int, now_ns: int | None = None) -> bool:
        """True (refused and counted) when ``stamp_ns`` lies ahead of the node's clock by more
        than max_future_s. A clock that is not set yet (sim time before /clock) judges nothing."""
        now = self._node.get_clock().now().nanoseconds if now_ns is None else now_ns
        if now == UNSET_CLOCK_NS or stamp_ns <= now + self.max_future_ns:
            return False
        with self._lock:
            self.future_stamps += 1
        self.refuse(topic, f"stamp {stamp_ns} ns is {(stamp_ns - now) * 1e-9:.3f} s ahead of "
                           f"the node's clock (tolerance {self.max_future_ns * 1e-9:.3f} s)")
        return True

    def guard(self, topic: str, fn: Callable[..., None]) -> Callable[..., None]:
        """``fn`` as a callback (subscription: one message; timer: none) that never raises: an
        exception refuses the input and is reported under ``topic``."""
        def callback(*msg: Any) -> None:
            try:
                fn(*msg)
            except Exception as err:  # no payload may end the executor's spin
                self.refuse(topic, f"{type(err).__name__}: {err}")
        callback.__name__ = getattr(fn, "__name__", "callback")
        callback.fowm_guarded = True        # type: ignore[attr-defined]  (tests/nodes check it)
        return callback

    def service(self, name: str, fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        """``fn`` as a service callback that never raises: an exception is refused and reported
        under ``name`` and answered as a failure (``success`` False, ``message`` naming it)."""
        def callback(request: Any, response: Any) -> Any:
            try:
                return fn(request, response)
            except Exception as err:  # a service call must not end the executor's spin either
                why = f"{type(err).__name__}: {err}"
                self.refuse(name, why)
                response.success, response.message = False, f"{name} failed: {why}"[:500]
                return response
        callback.__name__ = getattr(fn, "__name__", "service")
        callback.fowm_guarded = True        # type: ignore[attr-defined]
        return callback

    def values(self) -> dict[str, str]:
        """Diagnostic key/values: total, per topic, future stamps, the last reason."""
        with self._lock:
            return {"rejected_inputs": str(sum(self.refused.values())),
                    "rejected_by_topic": json.dumps(self.refused, sort_keys=True),
                    "future_stamps": str(self.future_stamps),
                    "last_rejected": self.last[:200]}


def restart_stopped(loop: Any, make: Callable[[], Any]) -> Any | None:
    """A started replacement for a fowm.ros.timing loop whose thread has stopped (keeping its
    statistics), or None while it runs."""
    if loop.is_running:
        return None
    new = make()
    new.stats = loop.stats
    new.start()
    return new


class SupervisedThread:
    """A daemon worker thread that ``check()`` restarts when it died of an exception. A target
    that returns has finished (it is not restarted); ``stop()`` ends supervision."""

    def __init__(self, name: str, target: Callable[[], None],
                 report: Callable[[str], None]) -> None:
        self.name = name
        self._target = target
        self._report = report
        self.restarts = 0
        self.last_error = ""
        self._failed = False
        self._stopped = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            self._target()
        except Exception as err:  # recorded here, restarted by check()
            with self._lock:
                self._failed = True
                self.last_error = f"{type(err).__name__}: {err}"
            tb = traceback.format_exc(limit=6)
            self._report(f"thread {self.name} died ({self.last_error}); restarting it\n{tb}")

    def check(self) -> bool:
        """Restart the thread if it died of an exception; True when it did."""
        with self._lock:
            if self._stopped or not self._failed or self._thread.is_alive():
                return False
            self._failed = False
            self.restarts += 1
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        return True

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout_s: float = 5.0) -> None:
        """End supervision and wait for the thread (its target must be told to stop first)."""
        with self._lock:
            self._stopped = True
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
