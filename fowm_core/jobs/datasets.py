"""`fowm dataset stats`: what an episode-bag dataset holds, whatever made it.

Size, success after the last step (the bags' end events, what ``collect`` reports as
``success_rate_new``) and at any step (the evaluation's metric, recomputed from the logged task
states), and the distribution of returns, undiscounted and discounted. The ``made`` entry is the
dataset's own record (``dataset.json``, written by ``fowm collect``), when it has one.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from fowm_core import tasks
from fowm_core.data import bags
from fowm_core.data.episode import Episode
from fowm_core.errors import BagError
from fowm_core.sim.scripted import task_state_from_vector

DISCOUNT = 0.9          # the algorithm's γ (docs/algorithm.md §5), for the discounted returns
PERCENTILES = (0, 10, 25, 50, 75, 90, 100)


def success_any(task: str, episode: Episode) -> bool:
    """Success at any step after the first, from the state-mode observations."""
    states = [task_state_from_vector(task, s) for s in episode.obs["state"]]
    init_z = None if states[0].obj is None else float(states[0].obj[2])
    return any(tasks.success(task, dataclasses.replace(s, obj_init_z=init_z))
               for s in states[1:])


def discounted(rewards: np.ndarray, discount: float = DISCOUNT) -> float:
    return float(np.sum(discount ** np.arange(len(rewards)) * rewards))


def distribution(values: list[float]) -> dict[str, Any]:
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "std": float(v.std()),
            "percentiles": {str(p): float(np.percentile(v, p)) for p in PERCENTILES}}


def episode_stats(task: str, episodes: list[Episode]) -> dict[str, Any]:
    if not episodes:
        msg = f"no {task} episodes to summarise"
        raise BagError(msg)
    return {
        "episodes": len(episodes), "transitions": int(sum(len(e) for e in episodes)),
        "success_final": float(np.mean([e.success for e in episodes])),
        "success_any": float(np.mean([success_any(task, e) for e in episodes])),
        "return": distribution([float(e.reward.sum()) for e in episodes]),
        "discounted_return": distribution([discounted(e.reward) for e in episodes]),
    }


def stats(root: str | Path, *, progress: bool = False) -> dict[str, Any]:
    """The stats of every episode bag under ``root`` (all of one task)."""
    root = Path(root)
    read = bags.read_dataset(root, obs_mode="state", progress=progress)
    found = sorted({e.info["task"] for e in read.episodes})
    if len(found) != 1:
        msg = (f"{root} holds episodes of tasks {found}; expected exactly one task: point at "
               "one task's folder")
        raise BagError(msg)
    made = root / "dataset.json"
    return {"path": str(root), "task": found[0], **episode_stats(found[0], read.episodes),
            "unreadable_bags": len(read.failures),
            "made": json.loads(made.read_text()) if made.is_file() else None}
