"""Weight hot-swap for a running planner (docs/design.md "Checkpoints", docs/platform.md §12).

The learner announces a checkpoint (path, sha256, step). ``HotSwapper.offer`` hands it to a
background thread, which does everything slow off the control thread:
  1. load it (safetensors + sidecar: hash, shapes against the running ModelConfig, finite values,
     finite outputs on a canned observation: checkpoints.load_validated_model);
  2. check the file is the one announced (sha256);
  3. a self-test plan: a fresh Planner with the running planner config plans the canned
     observation; the action, value and uncertainty must be finite and the action in [-1, 1].
A checkpoint that fails any step is refused with a logged reason and the live weights stay. One
that passes becomes a ready ``Candidate`` (model + planner already built). The control thread calls
``swap`` between two ticks: it only swaps references (and carries the warm start over), so a swap
costs no tick. The old planner is kept for rollback (``previous``). Pure Python + torch: no rclpy.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fowm_core.config import FowmConfig
from fowm_core.contract.messages import ABSENT, WeightsAnnouncement
from fowm_core.errors import CheckpointError, FowmError
from fowm_core.learning import checkpoints
from fowm_core.learning.checkpoint_file import MAX_SIDECAR_BYTES, read_regular_file
from fowm_core.model.device import generator_for, resolve_device
from fowm_core.planner.mppi import Planner

LogFn = Callable[[str, str], None]          # (level: "info" | "warning" | "error", text)


@dataclass(frozen=True)
class Weights:
    """Which checkpoint a planner plans with."""

    path: str
    sha256: str
    step: int | None = None

    def announcement(self, *, live: bool = False, swaps: int | None = None,
                     node: str | None = None) -> WeightsAnnouncement:
        """The topics.WEIGHTS message: {path, sha256, step}, plus {"live": true, swaps, node}
        when the planner reports the weights it plans with."""
        return WeightsAnnouncement(
            path=self.path, sha256=self.sha256 or ABSENT, step=self.step,
            live=True if live else ABSENT, swaps=ABSENT if swaps is None else swaps,
            node=node or ABSENT)

    def message(self, *, live: bool, swaps: int | None = None, node: str | None = None) -> str:
        """JSON for topics.WEIGHTS (``announcement``)."""
        return self.announcement(live=live, swaps=swaps, node=node).to_json()

    @classmethod
    def of_checkpoint(cls, path: str | Path) -> Weights:
        """From the checkpoint's sidecar (no tensor read: the planner loaded it already)."""
        try:
            side = json.loads(read_regular_file(checkpoints.sidecar_path(path),
                                                MAX_SIDECAR_BYTES).decode())
            return cls(str(path), str(side["tensor_sha256"]), side.get("meta", {}).get("step"))
        except (OSError, ValueError, KeyError, TypeError, AttributeError, CheckpointError) as err:
            msg = f"checkpoint sidecar of {path} cannot be read: {err}"
            raise CheckpointError(msg) from err


def parse_announcement(text: str | bytes) -> Weights | None:
    """A learner's announcement → Weights; None for the planner's own {"live": true} messages.
    MessageError (a FowmError) when the text is not a valid WeightsAnnouncement."""
    note = WeightsAnnouncement.from_json(text)
    if note.is_live:
        return None
    return Weights(note.path, note.get("sha256", ""), note.get("step"))


@dataclass
class Candidate:
    weights: Weights
    model: nn.Module
    planner: Planner


def validate(weights: Weights, cfg: FowmConfig, device: str | torch.device = "cpu") -> Candidate:
    """Load and self-test a checkpoint for a planner running ``cfg`` on ``device``;
    CheckpointError if bad."""
    model, info = checkpoints.load_validated_model(weights.path, cfg.model)
    device = resolve_device(device)
    model = model.to(device)
    if weights.sha256 and info.sha256 != weights.sha256:
        msg = (f"checkpoint {weights.path} has SHA-256 {info.sha256[:12]}… but was announced as "
               f"{weights.sha256[:12]}…: it was replaced after the announcement; waiting for "
               "the next one")
        raise CheckpointError(msg)
    planner = Planner(model, cfg, generator_for(device, 0))
    obs = {k: v[0].numpy() for k, v in checkpoints.canned_observation(cfg.model, 1).items()}
    try:
        result = planner.plan(obs, t0=True, eval_mode=True)
    except (RuntimeError, ValueError, FowmError) as err:
        msg = f"checkpoint {weights.path} fails the self-test plan: {err}"
        raise CheckpointError(msg) from err
    problems = []
    if not np.isfinite(result.action).all() or np.abs(result.action).max() > 1.0:
        problems.append(f"action {result.action.tolist()}")
    if not (math.isfinite(result.value) and math.isfinite(result.uncertainty)):
        problems.append(f"value {result.value}, uncertainty {result.uncertainty}")
    if problems:
        msg = (f"checkpoint {weights.path} plans badly on a canned observation "
               f"({'; '.join(problems)}); keeping the running weights")
        raise CheckpointError(msg)
    planner.reset()
    step = weights.step if weights.step is not None else info.step
    return Candidate(Weights(weights.path, info.sha256, step), model, planner)


@dataclass
class SwapStats:
    offered: int = 0
    swaps: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)      # (path, why)
    restarts: int = 0                                                 # validator thread


class HotSwapper:
    """Background validation, swap between ticks. ``offer`` from any thread, ``swap`` from the
    control thread only. The newest offer wins: an offer that arrives while another is being
    validated replaces the queued one, so a slow validation never builds a backlog."""

    def __init__(self, cfg: FowmConfig, live: Weights, log: LogFn | None = None,
                 device: str | torch.device = "cpu") -> None:
        self.cfg, self.device = cfg, device
        self.live = live
        self.previous: tuple[Weights, Planner] | None = None
        self.stats = SwapStats()
        self._log = log or (lambda level, text: None)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queued: Weights | None = None
        self._ready: Candidate | None = None
        self._stop = False
        self._thread = threading.Thread(target=self._main, name="fowm_hotswap", daemon=True)
        self._thread.start()

    def offer(self, weights: Weights) -> bool:
        """Queue an announced checkpoint for validation; False if it is live or queued already."""
        with self._lock:
            known = [self.live, self._queued, self._ready.weights if self._ready else None]
            if any(w is not None and w.sha256 and w.sha256 == weights.sha256 for w in known):
                return False
            self._queued = weights
            self.stats.offered += 1
            self._wake.notify()
        return True

    def swap(self, current: Planner) -> Candidate | None:
        """Between two ticks: install a validated candidate if one is ready (non-blocking)."""
        with self._lock:
            cand, self._ready = self._ready, None
            if cand is None:
                return None
            self.previous = (self.live, current)
            self.live = cand.weights
            self.stats.swaps += 1
        # The warm start (previous decision's mean) and the episode's RNG carry over, so the
        # first plan after a swap continues the episode as the old planner would have.
        cand.planner._prev_mean = current._prev_mean
        cand.planner.generator = current.generator
        return cand

    def wait_idle(self, timeout_s: float = 30.0) -> bool:
        """Until nothing is queued or being validated (tests, shutdown)."""
        with self._wake:
            return self._wake.wait_for(lambda: self._queued is None and not self._busy,
                                       timeout_s)

    def close(self) -> None:
        with self._lock:
            self._stop = True
            self._wake.notify_all()
        self._thread.join(10.0)

    _busy = False

    def ensure_running(self) -> bool:
        """Restart the validator if it died (a bug or a failing logger); True when it did. The
        owner calls this now and then: without the thread no checkpoint is ever applied."""
        with self._wake:
            if self._stop or self._thread.is_alive():
                return False
            self._busy = False
            self.stats.restarts += 1
            self._thread = threading.Thread(target=self._main, name="fowm_hotswap", daemon=True)
            self._thread.start()
            self._wake.notify_all()
        self._say("error", f"the weights validator thread had died; restarted it "
                           f"({self.stats.restarts} restarts)")
        return True

    def _say(self, level: str, text: str) -> None:
        # A logger that raises must not take the validator down with it.
        with contextlib.suppress(Exception):
            self._log(level, text)

    def _main(self) -> None:
        _lower_thread_priority()
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._queued is not None or self._stop)
                if self._stop:
                    return
                weights, self._queued, self._busy = self._queued, None, True
            assert weights is not None
            try:
                cand = validate(weights, self.cfg, self.device)
            except Exception as err:  # any failure refuses this checkpoint only
                why = str(err) if isinstance(err, CheckpointError | OSError) else (
                    f"validation failed ({type(err).__name__}: {err})")
                self._say("error", f"refusing weights {weights.path}: {why}")
                with self._wake:
                    self.stats.refused.append((weights.path, why))
                    self._busy = False
                    self._wake.notify_all()
                continue
            self._say("info", f"weights {Path(weights.path).name} (step {cand.weights.step}, "
                              f"sha256 {cand.weights.sha256[:12]}…) validated; swapping at the "
                              "next tick")
            with self._wake:
                self._ready = cand
                self._busy = False
                self._wake.notify_all()


def _lower_thread_priority(niceness: int = 10) -> None:
    """Validation is background work: on Linux a thread has its own nice value, so raising this
    thread's keeps the control thread first in line for the CPU (no-op elsewhere)."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
