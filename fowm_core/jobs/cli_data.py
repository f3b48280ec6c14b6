"""The `fowm` verbs about data and models' errors: ``diagnose`` and ``dataset stats`` (their jobs
live in jobs.diagnose and jobs.datasets; imported when the verb runs, as the other verbs')."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def cmd_diagnose(args: argparse.Namespace) -> int:
    from fowm_core.jobs import diagnose, results, workflows

    workflows.set_threads(args.threads)
    overrides = {} if args.lam is None else {"planner": {"uncertainty_cost": args.lam}}
    agent = workflows.load(args.checkpoint, overrides, seed=args.seed, device=args.device)
    report = {"checkpoint": str(args.checkpoint),
              **diagnose.diagnose(agent, args.data, episodes=args.episodes, seed=args.eval_seed,
                                  stride=args.stride, scripted_noise=args.scripted_noise)}
    if args.out:
        results.write_json(args.out, report)
    print(json.dumps(report))
    return 0


def cmd_dataset(args: argparse.Namespace) -> int:
    from fowm_core.jobs import datasets, results

    report = datasets.stats(args.data)
    if args.out:
        results.write_json(args.out, report)
    print(json.dumps(report))
    return 0


def add_parsers(sub: Any, add_device_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("diagnose", help="model error along the planner's sequences vs the data's")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--data", type=Path, default=None,
                   help="held-out episode bags (the data group); leave out to skip it")
    p.add_argument("--episodes", type=int, default=5,
                   help="evaluation episodes on the twin for the planner/scripted groups")
    p.add_argument("--stride", type=int, default=1, help="window start stride in the data")
    p.add_argument("--scripted-noise", type=float, default=0.0)
    p.add_argument("--lam", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-seed", type=int, default=10_000_000)
    p.add_argument("--threads", type=int, default=None)
    add_device_arg(p)
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    p.set_defaults(func=cmd_diagnose)

    p = sub.add_parser("dataset", help="stats of an episode-bag dataset (JSON)")
    p.add_argument("action", choices=["stats"])
    p.add_argument("data", type=Path, help="a folder of episode bags (one task)")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    p.set_defaults(func=cmd_dataset)
