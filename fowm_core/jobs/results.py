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
