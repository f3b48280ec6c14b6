"""`fowm collect --source agent`: datasets made the reference way, by a partially trained agent.

The reference's xArm datasets are not a noisy scripted controller: "medium-replay" is the replay
buffer of an online TD-MPC agent trained from scratch until it is of medium quality, and "medium"
is rollouts of that agent (docs/sim.md "How each dataset is made"). Here:

1. an agent (the same model, learner and planner as pretraining, state observations: cheap) starts
   from random weights; its first ``seed_episodes`` act uniformly at random (TD-MPC's seed steps);
   after them it does ``seed_episodes·T`` updates at once, then after each planner episode
   (exploration noise on, as finetuning) ``T·utd`` updates from its own buffer, no offline data;
2. every ``eval_every`` episodes it is evaluated (``eval_episodes``, eval mode, success at any
   step, seeds disjoint from the training ones); it stops at the first evaluation with success
   ≥ ``target_success``, or after ``train_episodes``;
3. every episode it played (random ones too) is a bag in ``out/medium-replay``; the agent at the
   stop is saved as ``out/agent/medium.safetensors`` and plays ``episodes`` more episodes (with
   its exploration noise, ``medium_eval_mode`` to turn it off) into ``out/medium``.
Each folder's ``dataset.json`` records how it was made (the numbers above, the evaluation history,
success and returns). With ``obs_mode`` "all" the bags also hold camera images (the agent itself
still sees the state vector).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from fowm_core.config import FowmConfig
from fowm_core.data import bags, convert
from fowm_core.data.episode import Episode
from fowm_core.data.episode_log import CameraSpec, EpisodeRecorder
from fowm_core.data.rollout import Rollout, rollout
from fowm_core.jobs import datasets, results
from fowm_core.learning import replay
from fowm_core.learning.agent import Agent, save
from fowm_core.learning.train import evaluate
from fowm_core.sim import XarmEnv, make_env

CAMERA_FOVY_DEG = 45.0
TRAIN_SEED = 2_000_000       # episode seeds: disjoint from collect (seed·1_000_003 + i) and eval
EVAL_SEED = 3_000_000


def _state(env: XarmEnv, info: dict[str, Any]) -> np.ndarray:
    s = info["task_state"]
    return convert.build_state(env.task, "state", s.eef, s.gripper, s.obj, s.goal)


def play(env: XarmEnv, act: Callable[[int, dict[str, np.ndarray]], np.ndarray],
         seed: int) -> tuple[Rollout, Episode]:
    """One episode; ``act`` sees the state observation whatever the env renders. Returns the
    rollout (for the bag) and the state-observation Episode (for the replay buffer)."""
    run = rollout(env, lambda t, obs, info: act(t, {"state": _state(env, info)}), seed)
    states = np.stack([_state(env, info) for info in run.infos])
    episode = Episode({"state": states}, np.stack(run.actions), np.asarray(run.rewards),
                      success=run.success, info={"success_any": run.success_any, "seed": seed})
    return run, episode


def write_bag(path: Path, env: XarmEnv, run: Rollout, index: int, seed: int,
              camera: bool) -> None:
    spec = CameraSpec(env.image_size, env.image_size, CAMERA_FOVY_DEG) if camera else None
    rec = EpisodeRecorder(env.task, episode=index, seed=seed, camera=spec)
    rec.reset(run.infos[0], run.observations[0].get("rgb"))
    for action, reward, info, obs in zip(run.actions, run.rewards, run.infos[1:],
                                         run.observations[1:], strict=True):
        rec.step(action, reward, info, obs.get("rgb"))
    bags.write_episode_bag(path, rec.finish(success=run.success), camera=camera)


def _record(kind: str, episodes: list[Episode], task: str, made: dict[str, Any]) -> dict:
    return {"task": task, "source": "agent", "kind": kind, **made,
            "stats": datasets.episode_stats(task, episodes)}


def collect_agent(cfg: FowmConfig, out: str | Path, *, episodes: int, train_episodes: int,
                  target_success: float = 0.5, eval_every: int = 20, eval_episodes: int = 10,
                  seed_episodes: int = 20, seed: int = 0, obs_mode: str = "state",
                  medium_eval_mode: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train from scratch, write the medium-replay and medium datasets (module doc)."""
    start = time.perf_counter()
    out = Path(out)
    camera = obs_mode in ("rgb", "all")
    task = cfg.task
    env = make_env(task, obs_mode="all" if camera else "state")
    eval_env = make_env(task, obs_mode="state")
    agent = Agent.create(cfg, seed=seed)
    buffer = replay.ReplayBuffer(max(train_episodes, 1) * env.episode_length, cfg.horizon,
                                 cfg.replay, replay.obs_spec_for(cfg.model),
                                 action_dim=cfg.model.action_dim)
    rng = np.random.default_rng(seed)
    dim = env.action_space.shape[0]

    def random_action(t: int, obs: dict[str, np.ndarray]) -> np.ndarray:
        return rng.uniform(-1.0, 1.0, dim).astype(np.float32)

    def plan_action(t: int, obs: dict[str, np.ndarray], eval_mode: bool = False) -> np.ndarray:
        if t == 0:
            agent.planner.reset()
        return agent.planner.plan(obs, t0=t == 0, eval_mode=eval_mode).action

    history: list[dict[str, Any]] = []
    played: list[Episode] = []
    bar = tqdm(range(train_episodes), desc=f"agent {task}", disable=not progress,
               mininterval=1.0)
    for n in bar:
        ep_seed = TRAIN_SEED + 1000 * seed + n
        act = random_action if n < seed_episodes else plan_action
        run, episode = play(env, act, ep_seed)
        T = len(episode)
        write_bag(out / "medium-replay" / f"{task}_agent_{seed:03d}_{n:05d}", env, run, n,
                  ep_seed, camera)
        buffer.add_episode(episode)
        played.append(episode)
        updates = T * cfg.schedule.utd if n >= seed_episodes else 0
        if n + 1 == seed_episodes:
            updates = seed_episodes * T          # TD-MPC: all seed steps' updates at once
        for _ in range(updates):
            agent.learner.update(buffer.sample(cfg.learner.batch_size, agent.rng))
        if n + 1 > seed_episodes and (n + 1) % eval_every == 0:
            result = evaluate(eval_env, agent.planner, eval_episodes,
                              seed=EVAL_SEED + 1000 * seed + n)
            history.append({"episodes": n + 1, "updates": agent.learner.step,
                            "success_rate": result.success_rate,
                            "mean_return": result.mean_return})
            bar.set_postfix(success=f"{result.success_rate:.2f}")
            if result.success_rate >= target_success:
                break
    reached = bool(history) and history[-1]["success_rate"] >= target_success
    ckpt = save(agent, out / "agent" / "medium.safetensors",
                {"success_rate": history[-1]["success_rate"] if history else None}).path
    made = {"seed": seed, "obs_mode": obs_mode, "preset": cfg.preset,
            "train_episodes_played": len(played), "seed_episodes": seed_episodes,
            "updates": agent.learner.step, "target_success": target_success,
            "target_reached": reached, "eval_every": eval_every,
            "eval_episodes": eval_episodes, "eval_history": history, "checkpoint": str(ckpt)}
    summary = {"medium-replay": _record("medium-replay", played, task, made)}
    results.write_json(out / "medium-replay" / "dataset.json", summary["medium-replay"])

    medium: list[Episode] = []
    for i in tqdm(range(episodes), desc=f"medium {task}", disable=not progress):
        ep_seed = seed * 1_000_003 + i
        run, episode = play(env, lambda t, obs: plan_action(t, obs, medium_eval_mode), ep_seed)
        write_bag(out / "medium" / f"{task}_medium_{seed:03d}_{i:05d}", env, run, i, ep_seed,
                  camera)
        medium.append(episode)
    env.close()
    eval_env.close()
    if medium:
        summary["medium"] = _record("medium", medium, task,
                                    {**made, "rollouts": episodes,
                                     "exploration_noise": not medium_eval_mode})
        results.write_json(out / "medium" / "dataset.json", summary["medium"])
    summary["seconds"] = round(time.perf_counter() - start, 1)
    return summary
