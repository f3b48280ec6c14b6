"""`fowm diagnose`: where a checkpoint's model errs, along the planner's own choices vs the data's.

Three groups of H-step sequences, each scored by learning.diagnostics (predicted vs true
discounted reward, the reward-head / dynamics split of the optimism, V on the imagined vs the
reached state, the Q-ensemble std):
- ``data``: every window of held-out episode bags, the data's own actions and recorded rewards;
- ``planner``: a few evaluation episodes on the twin (eval mode, as ``fowm eval``); at every step
  the planner plans from the live observation, its chosen sequence (the elite whose first action
  it took) is played open-loop in the twin from a snapshot of that moment, and the twin is
  restored before the planner's action is applied. The episodes themselves are unchanged;
- ``scripted``: from the same snapshots, H steps of the task's scripted controller (noise 0 by
  default), the behaviour the offline data was made from: the same states, a known-good sequence.

Bags hold no velocities, so a twin cannot be put back into a recorded state exactly: the planner
is diagnosed on the states it visits itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fowm_core.data.episode import Episode
from fowm_core.learning import diagnostics
from fowm_core.learning.agent import Agent, load_dataset, obs_mode
from fowm_core.learning.diagnostics import Windows
from fowm_core.sim import XarmEnv, make_env
from fowm_core.sim.scripted import ScriptedPolicy

Obs = dict[str, np.ndarray]
Item = tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]


def chosen_sequence(agent: Agent, action: np.ndarray) -> np.ndarray:
    """The H-step sequence behind the planner's last action: the elite whose first action it is
    (in eval mode the action is that elite's, unchanged)."""
    elites = agent.planner.last_elites                                 # (H, E, A)
    if elites is None:
        msg = "the planner has not planned with MPPI (planner.mpc false?): no elites to diagnose"
        raise ValueError(msg)
    gap = (elites[0].cpu() - torch.as_tensor(action)).abs().sum(-1)
    return elites[:, int(gap.argmin())].cpu().numpy()


def what_if(env: XarmEnv, obs: Obs, info: dict[str, Any], steps: int,
            act: Callable[[int, Obs, dict[str, Any]], np.ndarray]) -> Item:
    """Play ``steps`` actions from the env's current state; the caller restores it afterwards."""
    observations, actions, rewards = [obs], [], []
    for k in range(steps):
        a = np.asarray(act(k, obs, info), dtype=np.float32)
        obs, reward, _, _, info = env.step(a)
        observations.append(obs)
        actions.append(a)
        rewards.append(reward)
    stacked = {key: np.stack([o[key] for o in observations]) for key in observations[0]}
    return stacked, np.stack(actions), np.asarray(rewards, np.float32)


def live_groups(agent: Agent, episodes: int, seed: int, scripted_noise: float = 0.0
                ) -> tuple[Windows, Windows, list[Episode]]:
    """The planner's chosen sequences and the scripted controller's from the same live states,
    and the planner's evaluation episodes themselves."""
    cfg, H = agent.cfg, agent.cfg.horizon
    env = make_env(cfg.task, obs_mode=obs_mode(cfg))
    script = ScriptedPolicy(cfg.task, noise=scripted_noise, rng=np.random.default_rng(seed))
    planned: list[Item] = []
    scripted: list[Item] = []
    runs: list[Episode] = []
    try:
        for i in range(episodes):
            agent.planner.reset()
            obs, info = env.reset(seed=seed + i)
            observations, actions, rewards, success = [obs], [], [], False
            for t in range(env.episode_length):
                plan = agent.planner.plan(obs, t0=t == 0, eval_mode=True)
                seq = chosen_sequence(agent, plan.action)
                snap = env.snapshot()
                planned.append(what_if(env, obs, info, H, lambda k, o, inf, s=seq: s[k]))
                env.restore(snap)
                scripted.append(what_if(env, obs, info, H,
                                        lambda k, o, inf: script.act(inf["task_state"])))
                env.restore(snap)
                obs, reward, _, _, info = env.step(plan.action)
                success = success or bool(info["success"])
                observations.append(obs)
                actions.append(plan.action)
                rewards.append(reward)
            runs.append(Episode({k: np.stack([o[k] for o in observations]) for k in obs},
                                np.stack(actions), np.asarray(rewards), success=success))
    finally:
        env.close()
    return Windows.stack(planned), Windows.stack(scripted), runs


def _group(agent: Agent, windows: Windows, episodes: list[Episode]) -> dict[str, Any]:
    cfg = agent.cfg
    out = diagnostics.summarise(diagnostics.score_sequences(agent.model, cfg, windows),
                                cfg.discount, cfg.horizon)
    if not episodes:
        return out
    return {"episodes": len(episodes), **out,
            **diagnostics.value_vs_return(agent.model, episodes, cfg.discount)}


def diagnose(agent: Agent, data: str | Path | None, *, episodes: int = 5, seed: int = 10_000_000,
             stride: int = 1, scripted_noise: float = 0.0, progress: bool = False
             ) -> dict[str, Any]:
    """The report ``fowm diagnose`` prints (module doc); ``data`` None skips the data group,
    ``episodes`` 0 the live groups."""
    start = time.perf_counter()
    cfg = agent.cfg
    report: dict[str, Any] = {"task": cfg.task, "lam": cfg.planner.uncertainty_cost,
                              "horizon": cfg.horizon, "discount": cfg.discount}
    if data is not None:
        held_out = load_dataset(data, cfg, progress=progress)
        windows = diagnostics.episode_windows(held_out, cfg.horizon, stride)
        report["data"] = {"path": str(data), **_group(agent, windows, held_out),
                          "success_rate": float(np.mean([e.success for e in held_out]))}
    if episodes > 0:
        planned, scripted, runs = live_groups(agent, episodes, seed, scripted_noise)
        report["planner"] = {**_group(agent, planned, runs), "eval_seed": seed,
                             "success_rate": float(np.mean([e.success for e in runs]))}
        report["scripted"] = {**_group(agent, scripted, []), "noise": scripted_noise,
                              "note": "the scripted controller from the planner's states"}
    report["seconds"] = round(time.perf_counter() - start, 1)
    return report
