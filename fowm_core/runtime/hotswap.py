"""Weight hot-swap for a running planner: only trusted weights act (docs/trust.md).

The learner announces a checkpoint on /fowm/weights. ``HotSwapper.offer`` checks the announcement
at once (``TrustPolicy.check_announcement``: signature with role "learner", SHA-256 present,
labels, and a step above the highest step ever live) and queues it; a background thread does the
slow part off the control thread:
  1. ``TrustPolicy.read_checkpoint``: the trusted directory, a bounded regular file, the announced
     SHA-256 of the bytes read, the sidecar's step and labels; the model is built from those bytes;
  2. the behavioural gate (gate.py): the candidate and the live weights (a separate reference
     planner, rebuilt after every swap or rollback) plan recent real observations of the robot
     (``ring``); too few of them yet: the candidate waits and is retried, not refused.
A checkpoint that fails is refused with a reason (``on_refused``) and the live weights stay. One
that passes becomes a ready ``Candidate``; the control thread calls ``swap`` between two ticks: a
reference swap that carries the warm start over, so it costs no tick. After a swap ``monitor``
(SwapMonitor) watches uncertainty and holds; ``roll_back`` restores the previous planner, and the
step floor stays, so the rolled-back checkpoint can never come back. No candidate is installed
while the monitor watches a fresh swap. Pure Python + torch: no rclpy.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fowm_core.config import FowmConfig
from fowm_core.contract.messages import ABSENT, WeightsAnnouncement
from fowm_core.errors import CheckpointError
from fowm_core.learning import checkpoints
from fowm_core.learning.checkpoint_file import MAX_SIDECAR_BYTES, read_regular_file
from fowm_core.model.device import generator_for, resolve_device
from fowm_core.planner.mppi import Planner
from fowm_core.runtime import trust
from fowm_core.runtime.gate import (
    GateConfig,
    GateReport,
    MonitorConfig,
    ObservationRing,
    SwapMonitor,
    gate,
    reference_planner,
)
from fowm_core.runtime.origin import Announced, TrustPolicy, check_step_floor

LogFn = Callable[[str, str], None]          # (level: "info" | "warning" | "error", text)
RefusedFn = Callable[[str, str, str], None]  # (stage, path, why)
# Where a checkpoint was refused: the announcement (layers 1, 3, 4 of docs/trust.md), the file
# (layers 2, 4), the behavioural gate (5), or an unexpected failure of the validator.
ANNOUNCEMENT, CHECKPOINT, GATE, ERROR = "announcement", "checkpoint", "gate", "error"


@dataclass(frozen=True)
class Weights:
    """Which checkpoint a planner plans with."""

    path: str
    sha256: str
    step: int | None = None

    def announcement(self, *, live: bool = False, swaps: int | None = None,
                     node: str | None = None) -> WeightsAnnouncement:
        """An unsigned topics.WEIGHTS message: {path, sha256, step}, plus {"live": true, swaps,
        node} for a live report (``live_message`` signs it)."""
        return WeightsAnnouncement(
            path=self.path, sha256=self.sha256 or ABSENT, step=self.step,
            live=True if live else ABSENT, swaps=ABSENT if swaps is None else swaps,
            node=node or ABSENT)

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


def live_message(key: bytes | None, weights: Weights, cfg: FowmConfig, *, swaps: int,
                 node: str, sender: str) -> str:
    """The planner's report of the weights it plans with, signed with role "planner-live" (a
    bag tells it from a forgery with ``trust.authentic_live``); unsigned without a key."""
    if not weights.sha256:
        return weights.announcement(live=True, swaps=swaps, node=node).to_json()
    body = trust.announcement(key, path=weights.path, sha256=weights.sha256, step=weights.step,
                              cfg=cfg, sender=sender, role=trust.ROLE_PLANNER_LIVE, live=True,
                              swaps=swaps, node=node)
    return WeightsAnnouncement.from_dict(body).to_json()


def parse_offer(text: str | bytes) -> dict[str, Any] | None:
    """A learner's announcement → its JSON object (what the signature covers); None for a
    planner's {"live": true} report. MessageError (a FowmError) for anything else."""
    note = WeightsAnnouncement.from_json(text)
    return None if note.is_live else note.as_dict()


@dataclass
class Candidate:
    weights: Weights
    model: nn.Module
    planner: Planner
    announced: Announced | None = None
    report: GateReport | None = None
    reference_sha: str = ""           # the live weights the gate compared it with


@dataclass
class SwapStats:
    offered: int = 0
    swaps: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)      # (path, why)
    refused_by_stage: dict[str, int] = field(default_factory=dict)
    rollbacks: list[tuple[str, str]] = field(default_factory=list)    # (path, why)
    deferred: int = 0                 # gate runs put off: too few real observations yet
    last_gate: str = ""               # the last gate report's summary
    restarts: int = 0                 # validator thread


class HotSwapper:
    """Trusted validation in the background, swap between ticks. ``offer`` from any thread;
    ``swap``, ``roll_back`` and ``monitor`` from the control thread only. The newest offer wins:
    one that arrives while another is validated replaces the queued one (no backlog).

    ``policy`` None: hot-swap is disabled and every offer is refused with ``disabled_reason``.
    """

    def __init__(self, cfg: FowmConfig, live: Weights, model: nn.Module,
                 policy: TrustPolicy | None, *, gate_cfg: GateConfig | None = None,
                 monitor_cfg: MonitorConfig | None = None, log: LogFn | None = None,
                 on_refused: RefusedFn | None = None, ring: ObservationRing | None = None,
                 retry_s: float = 0.5, disabled_reason: str = "hot-swap is disabled",
                 device: str | torch.device = "cpu") -> None:
        self.cfg, self.device = cfg, resolve_device(device)
        self.live = live
        self.policy = policy
        self.gate_cfg = gate_cfg or GateConfig()
        self.monitor = SwapMonitor(monitor_cfg or MonitorConfig())
        self.ring = ring or ObservationRing()
        self.floor: int | None = live.step        # the highest step ever live (anti-rollback)
        self.previous: tuple[Weights, Planner, nn.Module] | None = None
        self.stats = SwapStats()
        self.disabled_reason = disabled_reason
        self.retry_s = retry_s
        self._log = log or (lambda level, text: None)
        self._on_refused = on_refused
        self._live_model = model
        self._reference: tuple[str, Planner] | None = None     # validator thread only
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queued: Announced | None = None
        self._ready: Candidate | None = None
        self._stop = False
        self._busy = False
        self._thread = self._start_thread()

    # -- any thread ------------------------------------------------------------------------------
    def offer(self, body: Mapping[str, Any]) -> bool:
        """Check an announcement (signature, fields, labels, step floor) and queue it; False when
        refused (reported) or already live, queued or ready."""
        path = str(body.get("path", "")) if isinstance(body, Mapping) else ""
        try:
            if self.policy is None:
                raise trust.TrustError(self.disabled_reason)
            ann = self.policy.check_announcement(body, step_floor=None, task=self.cfg.task,
                                                 obs_mode=self.cfg.model.modality.value)
            with self._lock:
                known = [self.live.sha256, self._queued.sha256 if self._queued else None,
                         self._ready.weights.sha256 if self._ready else None]
                if ann.sha256 in known:
                    return False                  # e.g. the learner re-announcing after a restart
                check_step_floor(ann.step, self.floor)
                self._queued = ann
                self.stats.offered += 1
                self._wake.notify_all()
        except trust.TrustError as err:
            self._refuse(ANNOUNCEMENT, path, str(err))
            return False
        return True

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

    def ensure_running(self) -> bool:
        """Restart the validator if it died (a bug or a failing logger); True when it did. The
        owner calls this now and then: without the thread no checkpoint is ever applied."""
        with self._wake:
            if self._stop or self._thread.is_alive():
                return False
            self._busy = False
            self.stats.restarts += 1
            self._wake.notify_all()
        self._thread = self._start_thread()
        self._say("error", f"the weights validator thread had died; restarted it "
                           f"({self.stats.restarts} restarts)")
        return True

    # -- control thread --------------------------------------------------------------------------
    def swap(self, current: Planner) -> Candidate | None:
        """Between two ticks: install a validated candidate if one is ready (non-blocking); none
        while the monitor watches a fresh swap (the rollback target must stay the last good)."""
        with self._lock:
            cand = self._ready
            if cand is None or self.monitor.watching:
                return None
            self._ready = None
            step = cand.weights.step if cand.weights.step is not None else -1
            if cand.reference_sha != self.live.sha256 or (
                    self.floor is not None and step <= self.floor):
                # Gated against weights that are no longer live (a swap or rollback since):
                # validate again against the live ones, unless a newer offer is queued.
                if self._queued is None and cand.announced is not None and (
                        self.floor is None or step > self.floor):
                    self._queued = cand.announced
                    self._wake.notify_all()
                return None
            self.previous = (self.live, current, self._live_model)
            self.live, self._live_model = cand.weights, cand.model
            self.floor = step if self.floor is None else max(self.floor, step)
            self.stats.swaps += 1
        self.monitor.swapped()
        _carry_over(current, cand.planner)
        return cand

    def roll_back(self, current: Planner) -> tuple[Weights, Planner, nn.Module] | None:
        """Back to the weights before the last swap; the step floor stays (the weights rolled
        back from are never accepted again). None when there is nothing to go back to."""
        with self._lock:
            if self.previous is None:
                return None
            weights, planner, model = self.previous
            self.stats.rollbacks.append((self.live.path, self.monitor.reason))
            self.previous = None
            self.live, self._live_model = weights, model
        self.monitor.rolled_back()
        _carry_over(current, planner)
        return weights, planner, model

    # -- validator thread ------------------------------------------------------------------------
    def _start_thread(self) -> threading.Thread:
        """The validator runs torch with ONE thread: two threads on cores busy with the control
        loop and the learner were ~10× slower (OpenMP barriers, docs/trust.md). torch's count is
        per thread once set, but new threads copy the process-wide value: put that back."""
        process_threads = torch.get_num_threads()
        ready = threading.Event()
        thread = threading.Thread(target=self._main, args=(ready,), name="fowm_hotswap",
                                  daemon=True)
        thread.start()
        ready.wait(10.0)
        torch.set_num_threads(process_threads)
        return thread

    def _say(self, level: str, text: str) -> None:
        # A logger that raises must not take the validator down with it.
        with contextlib.suppress(Exception):
            self._log(level, text)

    def _refuse(self, stage: str, path: str, why: str) -> None:
        with self._lock:
            self.stats.refused.append((path, why))
            del self.stats.refused[:-100]                     # bounded under a flood
            self.stats.refused_by_stage[stage] = self.stats.refused_by_stage.get(stage, 0) + 1
        if self._on_refused is None:
            self._say("error", f"refusing weights {path} ({stage}): {why}")
            return
        with contextlib.suppress(Exception):
            self._on_refused(stage, path, why)

    def _main(self, ready: threading.Event) -> None:
        _lower_thread_priority()
        torch.set_num_threads(1)
        torch.ones(2, 2) @ torch.ones(2, 2)        # fix this thread's count (OpenMP)
        ready.set()
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._queued is not None or self._stop)
                if self._stop:
                    return
                ann, self._queued, self._busy = self._queued, None, True
            assert ann is not None
            stage = CHECKPOINT
            try:
                cand = self._validate(ann)
                stage = GATE
                report = cand.report
                assert report is not None
                if report.deferred:
                    self._defer(ann, report)
                    continue
                if not report.passed:
                    raise trust.TrustError(report.summary())
            except Exception as err:  # any failure refuses this checkpoint only
                known = isinstance(err, CheckpointError | OSError)
                why = str(err) if known else f"validation failed ({type(err).__name__}: {err})"
                self._refuse(stage if known else ERROR, str(ann.path), why)
                self._idle()
                continue
            self._say("info", f"weights {ann.path.name} (step {ann.step}, sha256 "
                              f"{ann.sha256[:12]}…) passed: {report.summary()}; swapping "
                              "at the next tick")
            with self._wake:
                self._ready = cand
            self._idle()

    def _idle(self) -> None:
        with self._wake:
            self._busy = False
            self._wake.notify_all()

    def _defer(self, ann: Announced, report: GateReport) -> None:
        """Too few real observations: retry after retry_s unless a newer offer replaces it."""
        with self._wake:
            self.stats.deferred += 1
            self.stats.last_gate = report.summary()
            if self._queued is None:
                self._queued = ann
            self._busy = False
            self._wake.notify_all()
            self._wake.wait_for(lambda: self._stop or self._queued is not ann, self.retry_s)

    def _validate(self, ann: Announced) -> Candidate:
        """Read and build the checkpoint (TrustError when untrusted), then gate it."""
        assert self.policy is not None
        model = self.policy.read_checkpoint(ann, self.cfg).model.to(self.device)
        planner = Planner(model, self.cfg, generator_for(self.device, 0))
        # On CUDA the control planner replays a captured graph; the gate reseeds per plan.
        judged = planner if self.device.type == "cpu" else Planner(
            model, self.cfg, generator_for(self.device, 0), cuda_graph=False)
        sha, reference = self._reference_planner()
        report = gate(judged, reference, self.ring.sample(self.gate_cfg.observations),
                      self.gate_cfg)
        if not report.deferred:
            with self._lock:
                self.stats.last_gate = report.summary()
        planner.reset()
        weights = Weights(str(ann.path), ann.sha256, ann.step)
        return Candidate(weights, model, planner, ann, report, sha)

    def _reference_planner(self) -> tuple[str, Planner]:
        """A planner over the live model, separate from the control thread's; rebuilt whenever
        the live weights changed (a swap or a rollback)."""
        with self._lock:
            sha, model = self.live.sha256, self._live_model
        if self._reference is None or self._reference[0] != sha:
            self._reference = (sha, reference_planner(model, self.cfg))
        return self._reference


def _carry_over(old: Planner, new: Planner) -> None:
    """The warm start (previous decision's mean) and the episode's RNG carry over, so the first
    plan with other weights continues the episode as the old planner would have."""
    new._prev_mean = old._prev_mean
    new.generator = old.generator


def _lower_thread_priority(niceness: int = 10) -> None:
    """Validation is background work: on Linux a thread has its own nice value, so raising this
    thread's keeps the control thread first in line for the CPU (no-op elsewhere)."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
