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
from fowm_core.data.episode_log import CameraSpec, EpisodeRecorder
from fowm_core.errors import ConfigError
from fowm_core.jobs import results
from fowm_core.learning import success
from fowm_core.learning.agent import (
    Agent,
    fit_state_norm,
    load,
    load_dataset,
    make_sampler,
    obs_mode,
    save,
)
from fowm_core.learning.success import SuccessClassifier
from fowm_core.learning.train import EvalResult, evaluate, finetune, pretrain
from fowm_core.sim import make_env, state_dim
from fowm_core.sim.scripted import ScriptedPolicy, scripted_rollout

# The agent's checkpoint and dataset functions live in learning/agent.py (the live learner uses
# them too); the jobs and their callers reach them through this module as well.
__all__ = ["Agent", "collect", "load", "load_dataset", "make_sampler", "preset_for",
           "run_eval", "run_finetune", "run_pretrain", "save", "set_threads"]

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
        run = scripted_rollout(env, policy, ep_seed)
        rec = EpisodeRecorder(task, episode=i, seed=ep_seed, camera=camera)
        rec.reset(run.infos[0], run.observations[0].get("rgb"))
        for action, reward, info, obs in zip(run.actions, run.rewards, run.infos[1:],
                                             run.observations[1:], strict=True):
            rec.step(action, reward, info, obs.get("rgb"))
        successes.append(run.success)
        bags.write_episode_bag(name, rec.finish(success=run.success, noise=noise),
                               camera=with_rgb)
    env.close()
    summary = {"task": task, "episodes": episodes, "noise": noise, "seed": seed,
               "obs_mode": obs_mode, "success_rate_new": float(np.mean(successes or [np.nan]))}
    results.write_json(out / "dataset.json", summary)
    return summary


REWARD_SOURCES = ("true", "classifier")


def reward_classifier(source: str, classifier: str | Path | None) -> SuccessClassifier | None:
    """The classifier whose probability replaces every reward (``source`` "classifier"), or None
    for the task's true rewards (docs/rewards.md)."""
    if source not in REWARD_SOURCES:
        msg = f"reward source {source!r} is invalid: expected one of {REWARD_SOURCES}"
        raise ConfigError(msg)
    if (source == "classifier") != (classifier is not None):
        msg = (f"reward source {source!r} with classifier={classifier!s}: --reward-source "
               "classifier needs --classifier PATH (fowm classifier train), and only it takes one")
        raise ConfigError(msg)
    return None if classifier is None else success.load(classifier)


def _reward_meta(clf: SuccessClassifier | None) -> dict[str, Any]:
    if clf is None:
        return {"reward_source": "true"}
    return {"reward_source": "classifier", "classifier_sha256": clf.sha256,
            "classifier_labels": clf.meta.get("label_source")}


def run_pretrain(cfg: FowmConfig, data: str | Path, out: str | Path, *, seed: int = 0,
                 progress: bool = True, device: str = "cpu",
                 classifier: SuccessClassifier | None = None) -> dict[str, Any]:
    """Offline pretraining; with ``classifier`` every reward is its success probability."""
    out = Path(out)
    start = time.perf_counter()
    if classifier is not None:
        success.check_task(classifier, cfg.task)
    episodes = load_dataset(data, cfg, progress=progress, image_reward=classifier)
    agent = Agent.create(cfg, seed=seed, device=device)
    fit_state_norm(agent, episodes)
    sampler = make_sampler(cfg, episodes)
    results.write_json(out / "config.json", cfg.to_dict())
    history: list[dict[str, float]] = []
    metrics = pretrain(agent, sampler, cfg.schedule.offline_steps, progress=progress,
                       on_log=lambda i, m: history.append({"step": i, **m}))
    ckpt = save(agent, out / "checkpoints" / "offline.safetensors", metrics).path
    summary = {"task": cfg.task, "seed": seed, "data": str(data), "episodes": len(episodes),
               "device": str(agent.device), "offline_steps": cfg.schedule.offline_steps,
               "checkpoint": str(ckpt), **_reward_meta(classifier),
               "seconds": round(time.perf_counter() - start, 1), "final": metrics,
               "history": history}
    results.write_json(out / "metrics.json", summary)
    return summary


def run_eval(agent: Agent, episodes: int, seed: int) -> EvalResult:
    env = make_env(agent.cfg.task, obs_mode=obs_mode(agent.cfg))
    try:
        return evaluate(env, agent.planner, episodes, seed=seed)
    finally:
        env.close()


def run_finetune(checkpoint: str | Path, data: str | Path, out: str | Path, *, episodes: int,
                 eval_at: list[int], eval_episodes: int, lam: float | None = None,
                 utd: int | None = None, seed: int = 0, progress: bool = True, device: str = "cpu",
                 classifier: SuccessClassifier | None = None) -> dict[str, Any]:
    """The reference off→on loop from a pretrained checkpoint; evaluates at the given counts.
    With ``classifier`` the offline and online rewards are its probabilities; evaluation's
    success is still the simulator's."""
    out = Path(out)
    start = time.perf_counter()
    overrides: dict[str, Any] = {} if lam is None else {"planner": {"uncertainty_cost": lam}}
    if utd is not None:
        overrides["schedule"] = {"utd": utd}
    agent = load(checkpoint, overrides, seed=seed, device=device)
    cfg = agent.cfg
    if classifier is not None:
        success.check_task(classifier, cfg.task)
    results.write_json(out / "config.json", cfg.to_dict())
    sampler = make_sampler(cfg, load_dataset(data, cfg, progress=progress,
                                             image_reward=classifier))
    env = make_env(cfg.task, obs_mode=obs_mode(cfg))
    if classifier is not None:
        env = ClassifierRewardEnv(env, classifier)
    # Evaluation seeds are disjoint from collection seeds and the same for every λ and count.
    eval_seed = 10_000_000 + 1000 * seed
    train_log: list[dict[str, Any]] = []
    try:
        evals = finetune(agent, env, sampler, episodes, eval_at=eval_at,
                         eval_fn=lambda n: run_eval(agent, eval_episodes, eval_seed),
                         seed=1_000_000 + 1000 * seed, progress=progress,
                         on_episode=lambda n, ep, m: train_log.append(
                             {"episode": n, "success": m["success"],
                              "return": float(ep.reward.sum()), **_true_return(env)}))
    finally:
        env.close()
    ckpt = save(agent, out / "checkpoints" / "final.safetensors", {}).path
    summary = {"task": cfg.task, "seed": seed, "lam": cfg.planner.uncertainty_cost,
               "checkpoint": str(ckpt), "episodes": episodes, "device": str(agent.device),
               **_reward_meta(classifier),
               "eval": {str(n): r.to_dict() for n, r in evals.items()},
               "online": train_log, "seconds": round(time.perf_counter() - start, 1)}
    results.write_json(out / "metrics.json", summary)
    curve = {"episodes": sorted(evals), "success": [[evals[n].success_rate for n in sorted(evals)]]}
    results.plot_success_curves(out / "success.png", {f"λ={summary['lam']:g}": curve},
                                f"{cfg.task}: success vs online episodes (seed {seed})")
    return summary


class ClassifierRewardEnv:
    """The twin with the classifier's reward: each step renders the camera image and the reward
    becomes p(success | image), as on a robot without a tracker; info keeps the true reward and
    success (evaluation and the logs still use the simulator's)."""

    def __init__(self, env: Any, classifier: SuccessClassifier) -> None:
        self.env, self.classifier = env, classifier
        self.true_return = 0.0

    def reset(self, *, seed: int | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        self.true_return = 0.0
        return self.env.reset(seed=seed)

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        size = self.classifier.img_size
        image = np.ascontiguousarray(self.env.render(size, size).transpose(2, 0, 1))  # HWC→CHW
        prob = float(self.classifier.predict(image)[0])
        self.true_return += float(reward)
        return obs, prob, terminated, truncated, {**info, "true_reward": float(reward)}

    def close(self) -> None:
        self.env.close()


def _true_return(env: Any) -> dict[str, float]:
    return {"true_return": env.true_return} if isinstance(env, ClassifierRewardEnv) else {}


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
