"""The twin's lock-step loop and its reset hand-over (fowm.nodes.sim_node): the loop waits for
answers on its own thread, never inside the executor, and steps the twin; ~/reset requests are
handed to it because MuJoCo's EGL context is current on that thread alone."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from fowm.ros.timing import LoopThread, TickStats


class LockstepLoop(LoopThread):
    """Waits for answers on its own thread (never inside the executor) and steps the twin."""

    def __init__(self, node: Any) -> None:
        super().__init__("fowm_sim", lambda tick: None, TickStats(None))
        self._node = node

    def _run(self) -> None:
        since = time.monotonic()
        while not self._stop.is_set() and self.alive():
            self._node._command_event.wait(0.05)
            self._node._command_event.clear()
            # The answer timeout runs only once a planner is up: a planner still loading its
            # checkpoint must not make the twin step on holds.
            try:
                stepped = self._node.lockstep_step(time.monotonic() - since)
            except Exception as err:  # as _guarded_tick: hold until ~/reset, keep looping
                self._node.tick_failed(err)
                stepped = True
            if stepped or self._node._episode_over or not self._node.planner_ready():
                since = time.monotonic()


@dataclass
class ResetRequest:
    seed: int
    done: threading.Event = field(default_factory=threading.Event)
    stamp_ns: int = 0
    error: str | None = None
