"""`fowm diagnose` (jobs/diagnose.py) and the scoring behind it (learning/diagnostics.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fowm_core.config import Modality, cpu
from fowm_core.data.episode import Episode
from fowm_core.jobs import cli, diagnose
from fowm_core.learning import diagnostics
from fowm_core.learning.agent import Agent
from fowm_core.sim import make_env

TINY = """
model: {latent_dim: 8, mlp_dim: 32, enc_dim: 32}
planner: {iterations: 2, num_samples: 24, num_elites: 6}
learner: {batch_size: 16}
schedule: {offline_steps: 20}
"""


def _tiny_agent(task: str = "push") -> Agent:
    cfg = cpu(task, Modality.STATE, state_dim=16 if task == "push" else 10)
    cfg = cfg.with_overrides({"model": {"latent_dim": 8, "mlp_dim": 32, "enc_dim": 32},
                              "planner": {"iterations": 2, "num_samples": 24,
                                          "num_elites": 6}})
    return Agent.create(cfg, seed=0)


def _episode(steps: int, state_dim: int, seed: int) -> Episode:
    rng = np.random.default_rng(seed)
    return Episode({"state": rng.normal(size=(steps + 1, state_dim)).astype(np.float32)},
                   rng.uniform(-1, 1, (steps, 3)), rng.normal(size=steps))


def test_windows_cover_every_start_and_the_split_adds_up(one_thread) -> None:
    agent = _tiny_agent()
    eps = [_episode(9, 16, 0), _episode(7, 16, 1)]
    windows = diagnostics.episode_windows(eps, horizon=5)
    assert len(windows) == (9 - 5 + 1) + (7 - 5 + 1)
    assert windows.obs["state"].shape == (6, 8, 16) and windows.action.shape == (5, 8, 3)
    np.testing.assert_array_equal(windows.reward[:, 1], eps[0].reward[1:6])
    scores = diagnostics.score_sequences(agent.model, agent.cfg, windows)
    gamma = agent.cfg.discount
    np.testing.assert_allclose(scores["true_return"][0],
                               sum(gamma ** t * eps[0].reward[t] for t in range(5)), rtol=1e-5)
    # At t = 0 the rollout starts from h(o_0): the imagined and true first latents agree, so the
    # reward terms at t = 0 are identical and the split is exact.
    out = diagnostics.summarise(scores, gamma, 5)
    assert out["sequences"] == 8
    assert out["optimism"] == pytest.approx(out["optimism_reward_head"]
                                            + out["optimism_dynamics"], abs=1e-6)
    assert out["reward_abs_error"] >= abs(out["optimism"]) - 1e-9


def test_a_perfect_model_of_its_own_rollout_has_no_dynamics_error(one_thread) -> None:
    """If the 'true' observations are states whose encodings are the model's own imagined
    latents, the dynamics share of the optimism is zero. With a state encoder that is the
    identity map (made so below), h(o) = o and ẑ can be fed back as the observations."""
    agent = _tiny_agent()
    model = agent.model
    H = agent.cfg.horizon
    with torch.no_grad():
        z = torch.rand(4, 8)
        a = torch.rand(H, 4, 3) * 2 - 1
        zs = [z]
        for t in range(H):
            zs.append(model.next(zs[-1], a[t]))
    windows = diagnostics.Windows({"z": torch.stack(zs).numpy()}, a.numpy(),
                                  np.zeros((H, 4), np.float32))
    model._encoder = torch.nn.ModuleDict({"z": torch.nn.Identity()})
    out = diagnostics.summarise(diagnostics.score_sequences(model, agent.cfg, windows),
                                agent.cfg.discount, H)
    assert out["optimism_dynamics"] == pytest.approx(0.0, abs=1e-6)
    assert out["latent_error"] == pytest.approx(0.0, abs=1e-12)
    assert out["v_dynamics_error"] == pytest.approx(0.0, abs=1e-6)


def test_returns_to_go() -> None:
    np.testing.assert_allclose(diagnostics.returns_to_go(np.array([1.0, 2.0, 3.0]), 0.5),
                               [1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3])


def test_the_chosen_sequence_starts_with_the_action_taken(one_thread) -> None:
    agent = _tiny_agent()
    env = make_env("push", "state")
    obs, _ = env.reset(seed=0)
    plan = agent.planner.plan(obs, t0=True, eval_mode=True)
    seq = diagnose.chosen_sequence(agent, plan.action)
    assert seq.shape == (agent.cfg.horizon, 3)
    np.testing.assert_allclose(seq[0], plan.action, atol=1e-6)
    env.close()


def test_live_groups_leave_the_episodes_as_fowm_eval_plays_them(one_thread) -> None:
    """The what-if rollouts restore the twin: the planner's episodes are the ones it plays
    without them (same seeds, same actions, same rewards)."""
    agent = _tiny_agent()
    _, _, runs = diagnose.live_groups(agent, episodes=1, seed=5)
    fresh = _tiny_agent()
    env = make_env("push", "state")
    obs, _ = env.reset(seed=5)
    fresh.planner.reset()
    for t in range(3):
        a = fresh.planner.plan(obs, t0=t == 0, eval_mode=True).action
        np.testing.assert_allclose(a, runs[0].action[t], atol=1e-6)
        obs, r, *_ = env.step(a)
        assert r == pytest.approx(runs[0].reward[t], abs=1e-6)
    env.close()


def test_fowm_diagnose_on_a_tiny_checkpoint(tmp_path, capsys, one_thread) -> None:
    data, held = tmp_path / "data", tmp_path / "held"
    assert cli.main(["collect", "--task", "push", "--episodes", "3", "--out", str(data)]) == 0
    assert cli.main(["collect", "--task", "push", "--episodes", "2", "--seed", "9",
                     "--out", str(held)]) == 0
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(TINY)
    assert cli.main(["pretrain", "--task", "push", "--data", str(data), "--config",
                     str(cfg_file), "--out", str(tmp_path / "pre")]) == 0
    ckpt = tmp_path / "pre" / "checkpoints" / "offline.safetensors"
    capsys.readouterr()
    out = tmp_path / "diag.json"
    assert cli.main(["diagnose", "--checkpoint", str(ckpt), "--data", str(held),
                     "--episodes", "1", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == json.loads(out.read_text())
    assert printed["data"]["sequences"] == 2 * (25 - 5 + 1)
    assert printed["planner"]["sequences"] == printed["scripted"]["sequences"] == 25
    for group in ("data", "planner", "scripted"):
        g = printed[group]
        assert g["optimism"] == pytest.approx(g["optimism_reward_head"]
                                              + g["optimism_dynamics"], abs=1e-5)
        assert np.isfinite(g["q_std"]) and g["q_std"] >= 0

