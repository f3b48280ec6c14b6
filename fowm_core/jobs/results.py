"""Results folders: config, metrics JSON and PNG plots of success against online episodes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def write_json(path: str | Path, data: Any) -> Path:
    """Write JSON atomically (temp file, fsync, rename), so a reader never sees half a file."""
    from fowm_core.learning.checkpoints import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2, sort_keys=False, default=_jsonable) + "\n"
    atomic_write(path, text.encode())
    return path


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    msg = f"cannot write {type(obj).__name__} to JSON"
    raise TypeError(msg)


def plot_success_curves(path: str | Path, curves: dict[str, dict[str, Any]], title: str) -> Path:
    """One line per label: x = online episodes, y = mean success over seeds, band = min..max.

    curves: label -> {"episodes": [0, 10, ...], "success": [[seed0 at each x], [seed1 ...], ...]}
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=120)
    for label, curve in curves.items():
        x = np.asarray(curve["episodes"])
        y = np.asarray(curve["success"], dtype=float).reshape(-1, len(x)) * 100
        ax.plot(x, y.mean(0), marker="o", label=f"{label} (n={len(y)})")
        if len(y) > 1:
            ax.fill_between(x, y.min(0), y.max(0), alpha=0.2)
    ax.set_xlabel("online episodes")
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(-2, 102)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_demo(path: str | Path, summary: dict[str, Any]) -> Path:
    """`fowm demo`'s figure: success before/after (bars) and each online episode's success with
    its running mean. ``summary``: the demo's demo.json (success_before/after, eval_episodes,
    task, swaps, tick_misses_with_learner, online.success)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    s = summary
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.bar(["before", "after"], [s["success_before"], s["success_after"]],
             color=["#999999", "#2b7bba"])
    left.set_ylim(0, 1)
    left.set_ylabel("success rate")
    left.set_title(f"{s['task']}: eval over {s['eval_episodes']} episodes")
    online = np.asarray(s["online"]["success"], float)
    if len(online):
        x = np.arange(1, len(online) + 1)
        window = max(1, min(5, len(online)))
        mean = np.convolve(online, np.ones(window) / window, mode="valid")
        right.plot(x, online, "o", alpha=0.4, label="episode success")
        right.plot(x[window - 1:], mean, "-", label=f"running mean ({window})")
    right.set_ylim(-0.05, 1.05)
    right.set_xlabel("online episode (live finetuning)")
    right.set_title(f"{s['swaps']} hot-swaps, {s['tick_misses_with_learner']} missed ticks")
    right.legend(loc="upper left")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
