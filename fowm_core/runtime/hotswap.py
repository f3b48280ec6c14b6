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
from typing import Any

import numpy as np
import torch
from torch import nn

from fowm_core.config import FowmConfig
from fowm_core.errors import CheckpointError, FowmError
from fowm_core.learning import checkpoints
from fowm_core.model.device import generator_for, resolve_device
from fowm_core.planner.mppi import Planner

LogFn = Callable[[str, str], None]          # (level: "info" | "warning" | "error", text)


@dataclass(frozen=True)
class Weights:
    """Which checkpoint a planner plans with."""

    path: str
    sha256: str
    step: int | None = None

    def message(self, *, live: bool, **extra: Any) -> str:
        """JSON for topics.WEIGHTS: {"live": true, path, sha256, step} from the planner."""
        body = {"path": self.path, "sha256": self.sha256, "step": self.step, **extra}
        if live:
            body["live"] = True
        return json.dumps(body, sort_keys=True)

    @classmethod
    def of_checkpoint(cls, path: str | Path) -> Weights:
        """From the checkpoint's sidecar (no tensor read: the planner loaded it already)."""
        try:
            side = json.loads(checkpoints.sidecar_path(path).read_text())
            return cls(str(path), str(side["tensor_sha256"]), side.get("meta", {}).get("step"))
        except (OSError, ValueError, KeyError) as err:
            msg = f"checkpoint sidecar of {path} cannot be read: {err}"
            raise CheckpointError(msg) from err


def parse_announcement(text: str) -> Weights | None:
    """A learner's announcement → Weights; None for the planner's own {"live": true} messages."""
    try:
        body = json.loads(text)
    except ValueError as err:
        msg = f"weights announcement is not JSON: {text[:80]!r}"
        raise FowmError(msg) from err
    if not isinstance(body, dict) or "path" not in body:
        msg = f"weights announcement {text[:80]!r} lacks \"path\"; expected {{path, sha256, step}}"
        raise FowmError(msg)
    if body.get("live"):
        return None
    step = body.get("step")
    return Weights(str(body["path"]), str(body.get("sha256") or ""),
                   None if step is None else int(step))


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
            except (CheckpointError, OSError) as err:
                self._log("error", f"refusing weights {weights.path}: {err}")
                with self._wake:
                    self.stats.refused.append((weights.path, str(err)))
                    self._busy = False
                    self._wake.notify_all()
                continue
            self._log("info", f"weights {Path(weights.path).name} (step {cand.weights.step}, "
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
