"""How much the planner should trust its model against π: offline success of one checkpoint under
planner variants (issue 15's candidate "π candidates, horizon, elites"), nothing retrained.

Each variant loads the checkpoint with planner overrides (fowm_core.learning.agent.load: the model
is unchanged) and runs the study's offline evaluation: the same evaluation seeds as `fowm finetune`
for that seed, the same number of episodes for every variant, so rows differ only in the planner.

    R=runs/experiment_agent/push/medium-replay
    python benchmarks/planner_trust.py --seed 0 --episodes 20 \
        --checkpoint $R/seed0/pretrain/checkpoints/offline.safetensors \
        [--out docs/results/push_planner_trust.json]

One JSON line per variant on stdout; with --out, all of them (and each checkpoint's planner) in one
file. Several --checkpoint/--seed pairs may be given (same order).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):          # run as a script: make fowm_core importable from the tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from fowm_core.jobs.workflows import run_eval
from fowm_core.learning.agent import load

# name → config overrides. The cpu preset plans 5 steps with 6 MPPI iterations over 512 samples,
# 50 elites, and mixes ⌊0.1·512⌋ π rollouts into the candidates.
VARIANTS: dict[str, dict[str, Any]] = {
    "preset": {},
    "pi_mix_0.5": {"planner": {"mixture_coef": 0.5}},
    "pi_mix_1.0": {"planner": {"mixture_coef": 1.0}},
    "horizon_3": {"horizon": 3},
    "horizon_1": {"horizon": 1},
    "elites_16": {"planner": {"num_elites": 16}},
    "elites_128": {"planner": {"num_elites": 128}},
    "lam_3": {"planner": {"uncertainty_cost": 3.0}},
}


def eval_seed(seed: int) -> int:
    """`fowm finetune`'s evaluation seeds for this training seed (jobs/workflows.py)."""
    return 10_000_000 + 1000 * seed


def overrides_of(name: str) -> dict[str, Any]:
    """The variant's config overrides, at λ = 1 (the study's offline number) unless it sets λ."""
    variant = VARIANTS[name]
    return {**variant, "planner": {"uncertainty_cost": 1.0, **variant.get("planner", {})}}


def run_variant(checkpoint: Path, seed: int, name: str, episodes: int) -> dict[str, Any]:
    start = time.perf_counter()
    overrides = overrides_of(name)
    agent = load(checkpoint, overrides, seed=seed)
    result = run_eval(agent, episodes, eval_seed(seed))
    return {"checkpoint": str(checkpoint), "seed": seed, "variant": name, "overrides": overrides,
            "success_rate": result.success_rate, "mean_return": result.mean_return,
            "episodes": episodes, "seconds": round(time.perf_counter() - start, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", action="append", required=True, type=Path)
    p.add_argument("--seed", action="append", required=True, type=int)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if len(args.checkpoint) != len(args.seed):
        p.error(f"{len(args.checkpoint)} --checkpoint but {len(args.seed)} --seed; give pairs")
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {sorted(VARIANTS)}")
    torch.set_num_threads(args.threads)
    rows = []
    for checkpoint, seed in zip(args.checkpoint, args.seed, strict=True):
        for name in names:
            row = run_variant(checkpoint, seed, name, args.episodes)
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.out:
        table = {name: [r["success_rate"] for r in rows if r["variant"] == name] for name in names}
        args.out.write_text(json.dumps({"episodes_per_row": args.episodes, "rows": rows,
                                        "success_by_variant": table}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
