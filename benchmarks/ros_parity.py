"""Same checkpoint, same seeds: success and return through ROS (lock-step) vs pure Python.

The ROS side is the whole sim stack in one process (fowm.bringup.run_stack with lockstep=True): the
twin publishes the robot's topics on /clock, the planner node pairs them, plans and answers, the
episode manager scores each step from the messages. The Python side steps the same twin and
planner directly. Lock-step makes both deterministic, so success per seed should be identical and
returns equal up to float32 round-off; any difference is a bug in the ROS path (pairing, stamps,
conversions, resets).

    .venv/bin/python benchmarks/ros_parity.py --checkpoint ckpt.safetensors \
        --episodes 10 > parity.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from fowm.bringup import run_stack

from fowm_core.learning.checkpoints import load_agent
from fowm_core.planner.mppi import Planner
from fowm_core.sim import make_env

REPO = Path(__file__).resolve().parents[1]


def python_eval(checkpoint: str | Path, seeds: list[int], episode_length: int = 25,
                torch_threads: int = 2) -> list[dict[str, Any]]:
    """The reference evaluation loop (docs/algorithm.md §6), mirroring what the planner node does
    per episode: reset the warm start and re-seed the planner's generator with the episode seed."""
    torch.set_num_threads(torch_threads)
    agent = load_agent(checkpoint)
    model, cfg = agent.model.eval(), agent.cfg
    generator = torch.Generator()
    planner = Planner(model, cfg, generator)
    env = make_env(cfg.task, cfg.model.modality.value, episode_length=episode_length)
    results = []
    try:
        for seed in seeds:
            obs, info = env.reset(seed=seed)
            planner.reset()
            generator.manual_seed(seed)
            ret, truncated, t = 0.0, False, 0
            while not truncated:
                action = planner.plan(obs, t0=t == 0, eval_mode=True).action
                obs, reward, _, truncated, info = env.step(action)
                ret += reward
                t += 1
            results.append({"seed": seed, "success": bool(info["success"]), "return": ret,
                            "steps": t})
    finally:
        env.close()
    return results


def ros_eval(checkpoint: str | Path, seeds: list[int], config: str | Path,
             episode_length: int = 25) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The same episodes through ROS topics (lock-step); seeds must be consecutive. The twin
    and the episode manager take task and obs mode from the checkpoint (ros.checkpoint_task)."""
    if seeds != list(range(seeds[0], seeds[0] + len(seeds))):
        msg = f"seeds {seeds} must be consecutive: the episode manager uses base_seed + n"
        raise ValueError(msg)
    overrides = {
        "fowm_sim": {"episode_length": episode_length},
        "fowm_planner": {"torch_threads": 2},
        "fowm_episode_manager": {"base_seed": seeds[0],
                                 "episode_length": episode_length, "service_timeout_s": 60.0},
    }
    result = run_stack(config, checkpoint, duration_s=60.0 + 30.0 * len(seeds), lockstep=True,
                       episodes=len(seeds), overrides=overrides)
    ends = [e for e in result.events if e["event"] == "end"]
    episodes = [{"seed": e["seed"], "success": e["success"], "return": e["return"],
                 "steps": e["steps"]} for e in ends]
    return episodes, {"timing": result.planner_timing, "holds": result.planner_holds}


def compare(py: list[dict[str, Any]], ros: list[dict[str, Any]]) -> dict[str, Any]:
    by_seed = {e["seed"]: e for e in ros}
    paired = [(p, by_seed[p["seed"]]) for p in py if p["seed"] in by_seed]
    return {
        "episodes_compared": len(paired),
        "python_success_rate": _rate(py),
        "ros_success_rate": _rate(ros),
        "same_success_per_seed": all(p["success"] == r["success"] for p, r in paired),
        "max_abs_return_diff": max((abs(p["return"] - r["return"]) for p, r in paired),
                                   default=float("nan")),
        "same_steps": all(p["steps"] == r["steps"] for p, r in paired),
    }


def _rate(episodes: list[dict[str, Any]]) -> float:
    return sum(e["success"] for e in episodes) / len(episodes) if episodes else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--base-seed", type=int, default=0)
    parser.add_argument("--config", default=str(REPO / "config" / "sim.yaml"))
    args = parser.parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    seeds = list(range(args.base_seed, args.base_seed + args.episodes))
    start = time.monotonic()
    py = python_eval(args.checkpoint, seeds)
    py_s = time.monotonic() - start
    ros, extra = ros_eval(args.checkpoint, seeds, args.config)
    report = {"checkpoint": str(args.checkpoint), "seeds": seeds, **compare(py, ros),
              "python_s": py_s, "ros_s": time.monotonic() - start - py_s,
              "python": py, "ros": ros, "ros_planner": extra}
    print(json.dumps(report, indent=2))
    return 0 if report["same_success_per_seed"] and len(ros) == len(py) else 1


if __name__ == "__main__":
    sys.exit(main())
