"""Supervising the stack's child process (the learner): restart with backoff, report it.

A learner that died (killed, disk full, a bad dataset) used to leave one log line and stay dead
(issue 11). ``SupervisedProcess`` restarts it after an exponentially growing delay with a cap, so
it resumes from its work directory once the cause is gone, without hammering a cause that is
not; after ``max_failures`` consecutive failures it gives up and says so. A run that stayed up
``stable_s`` resets the count. ``SupervisorNode`` publishes the supervisor's view (running /
restarting in N s / given up) on /diagnostics at 1 Hz and drives ``poll`` from its timer.

``poll`` and the spawn must run on the thread that will outlive the child: Linux's
PR_SET_PDEATHSIG (fowm_core.runtime.worklock.die_with_parent) fires when the *thread* that forked
the child ends. The executor's thread in fowm.bringup is the main thread.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rclpy.node import Node

from fowm.ros.diagnostics import ERROR, OK, WARN, DiagnosticsReporter
from fowm.ros.guard import InputGuard

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backoff:
    """Delay before restart k (k = consecutive failures, from 1): initial·factor^(k−1), ≤ cap."""

    initial_s: float = 1.0
    factor: float = 2.0
    cap_s: float = 30.0
    stable_s: float = 60.0          # up this long: the next failure counts from 1 again
    max_failures: int = 20          # consecutive failures before giving up (0: never)

    def delay(self, failures: int) -> float:
        return min(self.cap_s, self.initial_s * self.factor ** max(0, failures - 1))


class SupervisedProcess:
    """One child process kept running: ``poll()`` often; ``stop()`` at the end."""

    def __init__(self, name: str, start: Callable[[], subprocess.Popen],
                 backoff: Backoff | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self._start = start
        self.backoff = backoff or Backoff()
        self._clock = clock
        self.proc: subprocess.Popen | None = None
        self.state = "stopped"               # running | restarting | given_up | stopped
        self.failures = 0                    # consecutive
        self.restarts = 0                    # over the whole run
        self.exit_codes: list[int] = []      # of every exit it did not ask for
        self.restart_at: float | None = None
        self._started_at = 0.0

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def start(self) -> None:
        self.proc = self._start()
        self._started_at = self._clock()
        self.state, self.restart_at = "running", None

    def poll(self) -> str:
        """Notice an exit, schedule a restart, restart when due. Returns the state."""
        now = self._clock()
        if self.state == "running" and self.proc is not None:
            code = self.proc.poll()
            if code is not None:
                self._exited(code, now)
        if self.state == "restarting" and self.restart_at is not None and now >= self.restart_at:
            self.restarts += 1
            log.warning("restarting %s (restart %d)", self.name, self.restarts)
            self.start()
        return self.state

    def _exited(self, code: int, now: float) -> None:
        self.exit_codes.append(code)
        if now - self._started_at >= self.backoff.stable_s:
            self.failures = 0
        self.failures += 1
        if self.backoff.max_failures and self.failures >= self.backoff.max_failures:
            self.state = "given_up"
            log.error("%s exited with code %d, %d times in a row: giving up; fix the cause "
                      "(its log above) and restart the stack", self.name, code, self.failures)
            return
        delay = self.backoff.delay(self.failures)
        self.state, self.restart_at = "restarting", now + delay
        log.error("%s exited with code %d (failure %d in a row); restarting in %.1f s",
                  self.name, code, self.failures, delay)

    def status(self) -> tuple[bytes, str, dict[str, Any]]:
        """(level, message, values) for /diagnostics."""
        values = {"state": self.state, "pid": self.pid, "restarts": self.restarts,
                  "consecutive_failures": self.failures,
                  "last_exit_code": self.exit_codes[-1] if self.exit_codes else None}
        if self.state == "running":
            return (OK if not self.failures else WARN), f"{self.name} running", values
        if self.state == "restarting" and self.restart_at is not None:
            wait = max(0.0, self.restart_at - self._clock())
            return WARN, f"{self.name} restarting in {wait:.0f} s", values
        if self.state == "given_up":
            return ERROR, f"{self.name} given up after {self.failures} failures", values
        return WARN, f"{self.name} stopped", values

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGINT first (rclpy shuts down cleanly and frees its /dev/shm segments), SIGKILL last."""
        self.state = "stopped"
        return None if self.proc is None else stop_process(self.proc, timeout_s)


def stop_process(proc: subprocess.Popen, timeout_s: float = 20.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class SupervisorNode(Node):
    """Node ``fowm_supervisor``: polls a SupervisedProcess, reports it on /diagnostics at 1 Hz."""

    def __init__(self, supervised: SupervisedProcess, period_s: float = 1.0,
                 **kwargs: Any) -> None:
        super().__init__("fowm_supervisor", **kwargs)
        self.supervised = supervised
        self.diag = DiagnosticsReporter(self, f"fowm_supervisor: {supervised.name}",
                                        "fowm_supervisor")
        self.inputs = InputGuard(self)       # a failing poll is reported, never ends the stack
        self.poll_timer = self.create_timer(0.1, self.inputs.guard("supervisor poll", self._poll))
        self.create_timer(period_s, self.inputs.guard("diagnostics timer", self.diag.publish))

    def _poll(self) -> None:
        self.supervised.poll()
        level, message, values = self.supervised.status()
        self.diag.update(level, message, **values)
