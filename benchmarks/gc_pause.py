"""How long a full garbage collection stops a control process, before and after gc.freeze().

A full (generation-2) collection holds the GIL while it walks every tracked object, so every
thread of the process waits, the control thread included. This builds the heap of a planner
process (rclpy, torch, MuJoCo, the node modules, a world model, a planner and the twin, a few
planning decisions), then times ``gc.collect()`` as it is, and again after ``gc.freeze()``
(what fowm.ros.timing does when a control loop starts): then a collection walks only what was
made since, here nothing, in a running planner the few objects its ticks keep alive.

    .venv/bin/python benchmarks/gc_pause.py > gc_pause.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

import fowm.bringup  # noqa: F401  (every node module, as `fowm run` loads them)
import torch

from fowm_core.jobs import workflows
from fowm_core.learning.agent import Agent
from fowm_core.planner.mppi import Planner
from fowm_core.sim import make_env


def build_heap(task: str) -> tuple[Planner, Any]:
    """A cpu-preset agent, its planner and the twin, with a few decisions made."""
    torch.set_num_threads(1)
    cfg = workflows.preset_for("cpu", task, "state")
    agent = Agent.create(cfg, seed=0)
    planner = Planner(agent.model, cfg, torch.Generator().manual_seed(0))
    env = make_env(task, "state")
    obs, _ = env.reset(seed=0)
    for step in range(3):
        obs, *_ = env.step(planner.plan(obs, t0=step == 0, eval_mode=True).action)
    return planner, env


def full_collection_ms(repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        gc.collect()
        out.append((time.perf_counter() - start) * 1e3)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="lift")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    keep = build_heap(args.task)
    tracked = len(gc.get_objects())
    before = full_collection_ms(args.repeats)
    gc.freeze()
    after = full_collection_ms(args.repeats)
    result = {
        "task": args.task, "python": sys.version.split()[0], "torch": torch.__version__,
        "tracked_objects": tracked, "frozen_objects": gc.get_freeze_count(),
        "full_collection_ms": {"median": statistics.median(before), "all": before},
        "full_collection_ms_after_freeze": {"median": statistics.median(after), "all": after},
        "control_period_ms": 160.0,
    }
    keep[1].close()
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
