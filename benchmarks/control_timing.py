"""Control-loop timing of the planner node against the twin in real time (JSON on stdout).

Reports, at the given rate (default the twin's 6.25 Hz), the tick-deadline miss rate, tick
lateness/jitter and the planning latency distribution (median/p95/max), with torch limited to
``--threads`` (2 = the dev machine). ``--stall-s`` blocks the executor once for that long (a
callback that sleeps: the worst case of rclpy#1223) and reports how many ticks the control thread
made meanwhile; ``--executor multi`` uses a MultiThreadedExecutor instead.

    .venv/bin/python benchmarks/control_timing.py --duration 30 [--checkpoint C]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from fowm.nodes.planner_node import PlannerNode
from fowm.nodes.sim_node import SimNode
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter

from fowm_core.config import cpu
from fowm_core.learning.checkpoints import save_agent
from fowm_core.model import WorldModel


def default_checkpoint(path: Path, task: str) -> Path:
    """Random weights at the cpu preset's sizes (planning cost does not depend on the values)."""
    cfg = cpu(task, "all")
    save_agent(path, WorldModel(cfg.model), cfg, step=0, metrics={})
    return path


def run(checkpoint: Path, rate_hz: float, duration_s: float, threads: int, stall_s: float,
        multi: bool) -> dict[str, Any]:
    rclpy.init()
    executor = MultiThreadedExecutor(num_threads=4) if multi else SingleThreadedExecutor()
    # The twin takes task and obs mode from the checkpoint (fowm.ros.checkpoint_task).
    sim = SimNode(parameter_overrides=[Parameter("checkpoint", value=str(checkpoint)),
                                       Parameter("rate_hz", value=rate_hz)])
    planner = PlannerNode(parameter_overrides=[
        Parameter("checkpoint", value=str(checkpoint)), Parameter("rate_hz", value=rate_hz),
        Parameter("torch_threads", value=threads)])
    stall: dict[str, float] = {}
    nodes: list[Node] = [sim, planner]
    if stall_s > 0:
        blocker = Node("executor_blocker")

        def block() -> None:
            timer.cancel()
            stall["ticks_before"] = planner.counters.ticks
            time.sleep(stall_s)
            stall["ticks_during"] = planner.counters.ticks - stall["ticks_before"]

        timer = blocker.create_timer(duration_s / 2, block)
        nodes.append(blocker)
    for node in nodes:
        executor.add_node(node)
    deadline = time.monotonic() + duration_s
    try:
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        timing = planner.loop.stats.summary()
        plans = np.array(planner.counters.plan_ms)
        holds = dict(planner.counters.holds_by_reason)
    finally:
        for node in reversed(nodes):
            node.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown()
    result = {
        "rate_hz": rate_hz, "duration_s": duration_s, "torch_threads": threads,
        "cpu_count": os.cpu_count(), "executor": "multi" if multi else "single",
        "tick": timing, "holds_by_reason": holds, "plans": len(plans),
        "plan_latency_ms": {"median": _pct(plans, 50), "p95": _pct(plans, 95),
                            "max": float(plans.max()) if len(plans) else float("nan")},
    }
    if stall:
        result["stall"] = {"blocked_s": stall_s, "ticks_during": stall.get("ticks_during"),
                           "ticks_expected": stall_s * rate_hz}
    return result


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="default: random cpu-preset weights")
    parser.add_argument("--task", default="lift")
    parser.add_argument("--rate", type=float, default=1 / 0.16)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--stall-s", type=float, default=0.0)
    parser.add_argument("--executor", choices=("single", "multi"), default="single")
    args = parser.parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = (Path(args.checkpoint) if args.checkpoint
                else default_checkpoint(Path(tmp) / "cpu.safetensors", args.task))
        result = run(ckpt, args.rate, args.duration, args.threads, args.stall_s,
                     args.executor == "multi")
    result["checkpoint"] = args.checkpoint or f"random weights, cpu preset, {args.task}/all"
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
