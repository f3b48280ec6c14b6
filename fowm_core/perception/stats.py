"""The tracker's health numbers, per reporting period and in total: detection rate of each marker
set, processing latency, image age at publication and reprojection error (pure bookkeeping, so the
node only formats it for /diagnostics)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np


@dataclass
class _Window:
    frames: int = 0
    seen: dict[str, int] = field(default_factory=dict)
    process_ms: list[float] = field(default_factory=list)
    age_ms: list[float] = field(default_factory=list)
    reproj_px: list[float] = field(default_factory=list)


class TrackerStats:
    """Thread-safe counters; ``period()`` returns the last period's summary and starts a new one."""

    def __init__(self, targets: tuple[str, ...]) -> None:
        self.targets = targets
        self.frames = 0
        self.published = {t: 0 for t in targets}
        self.rejected_markers = 0
        self._window = _Window()
        self._lock = threading.Lock()

    def record(self, seen: dict[str, bool], process_ms: float, age_ms: float,
               reproj_px: float | None, rejected: int) -> None:
        with self._lock:
            self.frames += 1
            self.rejected_markers += rejected
            w = self._window
            w.frames += 1
            for target, hit in seen.items():
                w.seen[target] = w.seen.get(target, 0) + int(hit)
                self.published[target] += int(hit)
            w.process_ms.append(process_ms)
            w.age_ms.append(age_ms)
            if reproj_px is not None:
                w.reproj_px.append(reproj_px)

    def period(self) -> dict[str, float | int | None]:
        """The summary since the last call: frames, each target's detection rate (None without
        frames), mean/max latency (ms) and mean reprojection error (px)."""
        with self._lock:
            w, self._window = self._window, _Window()
            out: dict[str, float | int | None] = {"frames": w.frames,
                                                  "frames_total": self.frames,
                                                  "rejected_markers": self.rejected_markers}
            for t in self.targets:
                out[f"{t}_rate"] = w.seen.get(t, 0) / w.frames if w.frames else None
                out[f"{t}_published"] = self.published[t]
            out["process_ms_mean"] = _mean(w.process_ms)
            out["process_ms_max"] = max(w.process_ms) if w.process_ms else None
            out["latency_ms_mean"] = _mean(w.age_ms)
            out["reproj_px_mean"] = _mean(w.reproj_px)
            return out


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None
