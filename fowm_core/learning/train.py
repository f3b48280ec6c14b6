"""The offline → online procedure of the reference (docs/algorithm.md §6), as plain functions.

    pretrain   : offline gradient steps on the offline buffer only
    run_episode: one episode with the planner (exploration noise while collecting, none in eval)
    evaluate   : N episodes in eval mode; an episode succeeds if the task reports success at
                 any step (the reference's evaluate())
    finetune   : repeat { one planner episode → online buffer; len(episode)·utd balanced updates }
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from fowm_core.data.episode import Episode
from fowm_core.data.rollout import Env, rollout
from fowm_core.learning.agent import Agent
from fowm_core.learning.replay import BalancedSampler
from fowm_core.planner.mppi import Planner


@dataclass
class EvalResult:
    success_rate: float
    mean_return: float
    successes: list[bool] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"success_rate": self.success_rate, "mean_return": self.mean_return,
                "episodes": len(self.successes), "seconds": round(self.seconds, 2)}


def pretrain(agent: Agent, sampler: BalancedSampler, steps: int, *, progress: bool = True,
             log_every: int = 500, on_log: Callable[[int, dict], None] | None = None
             ) -> dict[str, float]:
    """`steps` offline updates (the online buffer is empty, so every row is offline data)."""
    metrics: dict[str, float] = {}
    bar = tqdm(range(steps), desc="pretrain", disable=not progress, mininterval=1.0)
    for i in bar:
        metrics = update_once(agent, sampler)
        if (i + 1) % log_every == 0:
            bar.set_postfix(loss=f"{metrics.get('total_loss', float('nan')):.3f}")
            if on_log:
                on_log(i + 1, metrics)
    return metrics


def update_once(agent: Agent, sampler: BalancedSampler) -> dict[str, float]:
    batch = sampler.sample(agent.cfg.learner.batch_size, agent.rng)
    return agent.learner.update(batch)


def run_episode(env: Env, planner: Planner, *, eval_mode: bool, seed: int | None = None
                ) -> tuple[Episode, bool]:
    """Roll out one episode; returns it and whether success was reported at any step."""
    planner.reset()

    def act(t: int, obs: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        return planner.plan(obs, t0=t == 0, eval_mode=eval_mode).action

    run = rollout(env, act, seed)
    return run.episode({"success_any": run.success_any, "seed": seed}), run.success_any


def evaluate(env: Env, planner: Planner, episodes: int, *, seed: int, progress: bool = False
             ) -> EvalResult:
    start = time.perf_counter()
    successes, returns = [], []
    for i in tqdm(range(episodes), desc="eval", disable=not progress, leave=False):
        ep, success = run_episode(env, planner, eval_mode=True, seed=seed + i)
        successes.append(success)
        returns.append(float(ep.reward.sum()))
    return EvalResult(float(np.mean(successes)), float(np.mean(returns)), successes,
                      time.perf_counter() - start)


def finetune(agent: Agent, env: Env, sampler: BalancedSampler, episodes: int,
             *, eval_at: Iterable[int] = (), eval_fn: Callable[[int], EvalResult] | None = None,
             seed: int = 0, progress: bool = True,
             on_episode: Callable[[int, Episode, dict], None] | None = None
             ) -> dict[int, EvalResult]:
    """The reference's online loop: collect one episode, then len(episode)·utd balanced updates."""
    evals: dict[int, EvalResult] = {}
    checkpoints = sorted(set(eval_at))
    if eval_fn is not None and 0 in checkpoints:
        evals[0] = eval_fn(0)
    bar = tqdm(range(1, episodes + 1), desc="finetune", disable=not progress, mininterval=1.0)
    for n in bar:
        episode, success = run_episode(env, agent.planner, eval_mode=False, seed=seed + n)
        sampler.online.add_episode(episode)
        metrics: dict[str, float] = {}
        for _ in range(len(episode) * agent.cfg.schedule.utd):
            metrics = update_once(agent, sampler)
        if on_episode:
            on_episode(n, episode, {"success": success, **metrics})
        if eval_fn is not None and n in checkpoints:
            evals[n] = eval_fn(n)
            bar.set_postfix(success=f"{evals[n].success_rate:.2f}")
    return evals
