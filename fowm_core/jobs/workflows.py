"""The `fowm` command's jobs: collect a dataset, pretrain, finetune, evaluate.

Each job reads and writes files only (rosbag2 datasets, checkpoints, a results folder with
config.json, metrics.json and plots), so jobs can run in separate processes and be resumed.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from fowm_core import tasks
from fowm_core.config import FowmConfig, Modality
from fowm_core.data import bags
from fowm_core.data.episode import Episode
from fowm_core.data.episode_log import CameraSpec, EpisodeRecorder
from fowm_core.errors import BagError
from fowm_core.jobs import results
from fowm_core.learning import checkpoints
from fowm_core.learning.train import Agent, EvalResult, evaluate, finetune, make_sampler, pretrain
from fowm_core.sim import make_env, state_dim
from fowm_core.sim.scripted import ScriptedPolicy

CAMERA_FOVY_DEG = 45.0


def collect(task: str, episodes: int, out: str | Path, *, noise: float | None = None,
            seed: int = 0, obs_mode: str = "state", progress: bool = True) -> dict[str, Any]:
    """Run the scripted behaviour policy and write one rosbag2 (MCAP) per episode under `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    noise = tasks.get(task).medium_noise if noise is None else noise
    with_rgb = obs_mode in ("rgb", "all")
    env = make_env(task, obs_mode="all" if with_rgb else "state")
    camera = CameraSpec(env.image_size, env.image_size, CAMERA_FOVY_DEG) if with_rgb else None
    policy = ScriptedPolicy(task, noise=noise, rng=np.random.default_rng(seed))
    successes = []
    for i in tqdm(range(episodes), desc=f"collect {task}", disable=not progress):
        ep_seed = seed * 1_000_003 + i
        name = out / f"{task}_{seed:03d}_{i:05d}"
        if (name / "metadata.yaml").exists():          # resumable: keep what was written
            continue
        obs, info = env.reset(seed=ep_seed)
        rec = EpisodeRecorder(task, episode=i, seed=ep_seed, camera=camera)
        rec.reset(info, obs.get("rgb"))
        done = False
        while not done:
            action = policy.act(env.task_state())
            obs, reward, terminated, truncated, info = env.step(action)
            rec.step(action, reward, info, obs.get("rgb"))
            done = terminated or truncated
        successes.append(bool(info["success"]))
        bags.write_episode_bag(name, rec.finish(success=info["success"], noise=noise),
                               camera=with_rgb)
    env.close()
    summary = {"task": task, "episodes": episodes, "noise": noise, "seed": seed,
               "obs_mode": obs_mode, "success_rate_new": float(np.mean(successes or [np.nan]))}
    results.write_json(out / "dataset.json", summary)
    return summary


def load_dataset(data: str | Path, cfg: FowmConfig, *, progress: bool = True) -> list[Episode]:
    mode = "state" if cfg.model.modality == Modality.STATE else str(cfg.model.modality)
    read = bags.read_dataset(data, task=cfg.task, obs_mode=mode, img_size=cfg.model.img_size,
                             progress=progress)
    for bag, why in read.failures:
        tqdm.write(f"skipped {bag}: {why}")
    if not read.episodes:
        msg = f"no readable episode bags under {data}"
        raise BagError(msg)
    return read.episodes


def save(agent: Agent, path: Path, step: int, metrics: dict[str, Any]) -> Path:
    checkpoints.save_agent(path, agent.model, agent.cfg, step,
                           {k: v for k, v in metrics.items() if isinstance(v, int | float)},
                           target=agent.learner.target,
                           optimizers={"model": agent.learner.optim,
                                       "pi": agent.learner.pi_optim})
    return path


def load(path: str | Path, cfg_overrides: dict[str, Any] | None = None, seed: int = 0) -> Agent:
    """An agent (model, learner state, planner) from a checkpoint, with optional config overrides
    that must not change the model's shape (e.g. planner.uncertainty_cost)."""
    loaded = checkpoints.load_agent(path)
    cfg = loaded.cfg.with_overrides(cfg_overrides or {})
    if cfg.model != loaded.cfg.model:
        msg = "overrides may not change the model's architecture"
        raise ValueError(msg)
    agent = Agent.create(cfg, seed=seed)
    checkpoints.load_agent(path, model=agent.model, cfg=cfg, target=agent.learner.target,
                           optimizers={"model": agent.learner.optim, "pi": agent.learner.pi_optim})
    agent.learner.step = int(loaded.meta.get("step", 0))
    return agent


def run_pretrain(cfg: FowmConfig, data: str | Path, out: str | Path, *, seed: int = 0,
                 progress: bool = True) -> dict[str, Any]:
    out = Path(out)
    start = time.perf_counter()
    episodes = load_dataset(data, cfg, progress=progress)
    agent = Agent.create(cfg, seed=seed)
    sampler = make_sampler(cfg, episodes)
    results.write_json(out / "config.json", cfg.to_dict())
    history: list[dict[str, float]] = []
    metrics = pretrain(agent, sampler, cfg.schedule.offline_steps, progress=progress,
                       on_log=lambda i, m: history.append({"step": i, **m}))
    ckpt = save(agent, out / "checkpoints" / "offline.safetensors", agent.learner.step, metrics)
    summary = {"task": cfg.task, "seed": seed, "data": str(data), "episodes": len(episodes),
               "offline_steps": cfg.schedule.offline_steps, "checkpoint": str(ckpt),
               "seconds": round(time.perf_counter() - start, 1), "final": metrics,
               "history": history}
    results.write_json(out / "metrics.json", summary)
    return summary


def run_eval(agent: Agent, episodes: int, seed: int) -> EvalResult:
    env = make_env(agent.cfg.task, obs_mode=_env_obs_mode(agent.cfg))
    try:
        return evaluate(env, agent.planner, episodes, seed=seed)
    finally:
        env.close()


def run_finetune(checkpoint: str | Path, data: str | Path, out: str | Path, *, episodes: int,
                 eval_at: list[int], eval_episodes: int, lam: float | None = None, seed: int = 0,
                 progress: bool = True) -> dict[str, Any]:
    """The reference off→on loop from a pretrained checkpoint; evaluates at the given counts."""
    out = Path(out)
    start = time.perf_counter()
    overrides = {} if lam is None else {"planner": {"uncertainty_cost": lam}}
    agent = load(checkpoint, overrides, seed=seed)
    cfg = agent.cfg
    results.write_json(out / "config.json", cfg.to_dict())
    sampler = make_sampler(cfg, load_dataset(data, cfg, progress=progress))
    env = make_env(cfg.task, obs_mode=_env_obs_mode(cfg))
    # Evaluation seeds are disjoint from collection seeds and the same for every λ and count.
    eval_seed = 10_000_000 + 1000 * seed
    train_log: list[dict[str, Any]] = []
    try:
        evals = finetune(agent, env, sampler, episodes, eval_at=eval_at,
                         eval_fn=lambda n: run_eval(agent, eval_episodes, eval_seed),
                         seed=1_000_000 + 1000 * seed, progress=progress,
                         on_episode=lambda n, ep, m: train_log.append(
                             {"episode": n, "success": m["success"],
                              "return": float(ep.reward.sum())}))
    finally:
        env.close()
    ckpt = save(agent, out / "checkpoints" / "final.safetensors", agent.learner.step, {})
    summary = {"task": cfg.task, "seed": seed, "lam": cfg.planner.uncertainty_cost,
               "checkpoint": str(ckpt), "episodes": episodes,
               "eval": {str(n): r.to_dict() for n, r in evals.items()},
               "online": train_log, "seconds": round(time.perf_counter() - start, 1)}
    results.write_json(out / "metrics.json", summary)
    curve = {"episodes": sorted(evals), "success": [[evals[n].success_rate for n in sorted(evals)]]}
    results.plot_success_curves(out / "success.png", {f"λ={summary['lam']:g}": curve},
                                f"{cfg.task}: success vs online episodes (seed {seed})")
    return summary


def _env_obs_mode(cfg: FowmConfig) -> str:
    return "state" if cfg.model.modality == Modality.STATE else str(cfg.model.modality)


def preset_for(preset: str, task: str, obs: str) -> FowmConfig:
    """A preset for a sim task, with the model's state size taken from the twin's observation."""
    from fowm_core import config
    modality = Modality(obs)
    cfg = config.preset(preset, task=task, modality=modality)
    mode = "state" if modality == Modality.STATE else "all"
    model = dataclasses.replace(cfg.model, state_dim=state_dim(task, mode))
    return dataclasses.replace(cfg, model=model)


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)
