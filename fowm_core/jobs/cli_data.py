"""The `fowm` verbs about data and models' errors: ``diagnose``, ``dataset stats`` and ``collect
--source agent`` (their jobs live in jobs.diagnose, jobs.datasets and jobs.agent_data, imported when
the verb runs, as the other verbs')."""

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


def cmd_collect_agent(args: argparse.Namespace,
                      config: Callable[[argparse.Namespace], Any]) -> int:
    """`fowm collect --source agent` (jobs.agent_data); the agent sees the state vector."""
    from fowm_core.jobs import agent_data, workflows

    workflows.set_threads(args.threads)
    cfg = config(argparse.Namespace(**{**vars(args), "obs": "state"}))
    summary = agent_data.collect_agent(
        cfg, args.out, episodes=args.episodes, train_episodes=args.train_episodes,
        target_success=args.target_success, eval_every=args.eval_every,
        eval_episodes=args.eval_episodes, seed_episodes=args.seed_episodes, seed=args.seed,
        obs_mode=args.obs, medium_eval_mode=args.no_exploration)
    print(json.dumps(summary))
    return 0


def add_agent_args(p: argparse.ArgumentParser) -> None:
    """`fowm collect`'s options for --source agent."""
    g = p.add_argument_group("--source agent")
    g.add_argument("--train-episodes", type=int, default=600, help="most training episodes")
    g.add_argument("--target-success", type=float, default=0.5,
                   help="stop training at the first evaluation with this success (any step)")
    g.add_argument("--eval-every", type=int, default=20)
    g.add_argument("--eval-episodes", type=int, default=10)
    g.add_argument("--seed-episodes", type=int, default=20, help="random-action episodes first")
    g.add_argument("--no-exploration", action="store_true",
                   help="medium rollouts without the planner's exploration noise")
    g.add_argument("--preset", default="cpu", choices=["cpu", "paper"])
    g.add_argument("--config", type=Path, help="YAML overrides of the agent's preset")
    g.add_argument("--threads", type=int, default=None)


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
